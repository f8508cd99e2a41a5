//! BrainPy `.bp` files written by the real BrainPy (tests/fixtures/brainpy/, copied from the
//! shared fixtures): read every one, check every leaf against its manifest, write it back and
//! compare the bytes; build the tutorial's state in Rust and compare with BrainPy's file.

use brainstate_core::bpformat::{self, WriteOptions};
use brainstate_core::{DType, Pytree, PytreeMap, Tensor};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/brainpy")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn manifest(name: &str) -> Value {
    serde_json::from_slice(&read(&format!("{name}.json"))).expect("manifest json")
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

const FIXTURES: &[&str] = &[
    "ex1_state_dict.bp",
    "ex1_save_state.bp",
    "ex2_training_ckpt.bp",
    "synthetic_tree.bp",
    "toplevel_array.bp",
    "chunked_toplevel_maxchunk64.bp",
];

fn at<'a>(tree: &'a Pytree, path: &[Value]) -> &'a Pytree {
    let mut t = tree;
    for k in path {
        let k = k.as_str().expect("string key");
        t = match t {
            Pytree::Map(m) => m
                .get(k)
                .unwrap_or_else(|| panic!("no key {k:?} in path {path:?}")),
            other => panic!("path {path:?}: {k:?} under a {}", other.kind()),
        };
    }
    t
}

/// The manifest's value as f64 bits-comparable numbers ("NaN"/"Infinity" strings allowed).
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().expect("number"),
        Value::Bool(b) => *b as u8 as f64,
        Value::String(s) => match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            "-0.0" => -0.0,
            other => panic!("unexpected value string {other}"),
        },
        other => panic!("unexpected value {other}"),
    }
}

/// Every element of `t` as f64 (complex as re, im pairs), in C order.
fn flat(t: &Tensor) -> Vec<f64> {
    let b = t.le_bytes();
    let b: &[u8] = &b;
    match t.dtype() {
        DType::Bool | DType::U8 => b.iter().map(|&x| x as f64).collect(),
        DType::I8 => b.iter().map(|&x| x as i8 as f64).collect(),
        DType::I32 => b
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::I64 => b
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::F16 => b
            .chunks(2)
            .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64())
            .collect(),
        DType::F32 | DType::C64 => b
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        DType::F64 | DType::C128 => b
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        d => panic!("no flat() for {d}"),
    }
}

fn check_values(t: &Tensor, values: &[Value], what: &str) {
    let got = flat(t);
    let want: Vec<f64> = values
        .iter()
        .flat_map(|v| match v {
            Value::Array(pair) => pair.iter().map(num).collect::<Vec<_>>(),
            v => vec![num(v)],
        })
        .collect();
    let n = want.len();
    assert!(got.len() >= n, "{what}: {} values, manifest lists {n}", got.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: {g} != {w}"
        );
    }
}

fn check_leaf(tree: &Pytree, leaf: &Value, file: &str) {
    let path = leaf["path"].as_array().expect("path");
    let what = format!("{file}:{path:?}");
    let t = at(tree, path);
    let kind = leaf["kind"].as_str().unwrap();
    match kind {
        "ndarray" | "chunked_ndarray" | "npscalar" => {
            let x = match (kind, t) {
                ("npscalar", Pytree::Scalar(x)) => x,
                ("ndarray" | "chunked_ndarray", Pytree::Tensor(x)) => x,
                (k, other) => panic!("{what}: manifest says {k}, read a {}", other.kind()),
            };
            assert_eq!(x.dtype().name(), leaf["dtype"].as_str().unwrap(), "{what} dtype");
            let shape: Vec<usize> = leaf["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(x.shape(), &shape[..], "{what} shape");
            assert_eq!(
                x.nbytes() as u64,
                leaf["nbytes"].as_u64().unwrap(),
                "{what} nbytes"
            );
            assert_eq!(
                sha(&x.le_bytes()),
                leaf["sha256"].as_str().unwrap(),
                "{what} sha256"
            );
            if let Some(v) = leaf.get("values").and_then(Value::as_array) {
                assert_eq!(v.len(), x.len(), "{what}: all values listed");
                check_values(x, v, &what);
            } else {
                check_values(x, leaf["first_values"].as_array().expect("first_values"), &what);
            }
        }
        "int" => {
            let want = &leaf["value"];
            match t {
                Pytree::Int(i) => assert_eq!(Some(*i), want.as_i64(), "{what}"),
                Pytree::UInt(u) => assert_eq!(Some(*u), want.as_u64(), "{what}"),
                other => panic!("{what}: int expected, got {}", other.kind()),
            }
        }
        "float64" | "float32" => match t {
            Pytree::Float(x) => assert_eq!(x.to_bits(), num(&leaf["value"]).to_bits(), "{what}"),
            other => panic!("{what}: float expected, got {}", other.kind()),
        },
        "bool" => assert_eq!(t, &Pytree::Bool(leaf["value"].as_bool().unwrap()), "{what}"),
        "str" => assert_eq!(t, &Pytree::Str(leaf["value"].as_str().unwrap().into()), "{what}"),
        "nil" => assert_eq!(t, &Pytree::None, "{what}"),
        "empty_dict" => assert_eq!(t, &Pytree::map(), "{what}"),
        other => panic!("{what}: kind {other} not covered by this test"),
    }
}

/// Counts the leaves the manifest counts (arrays, scalars, and empty maps).
fn count_leaves(t: &Pytree) -> usize {
    match t {
        Pytree::Map(m) if m.is_empty() => 1,
        Pytree::Map(m) => m.values().map(count_leaves).sum(),
        Pytree::List(l) => l.iter().map(count_leaves).sum(),
        _ => 1,
    }
}

#[test]
fn every_fixture_matches_its_manifest_leaf_by_leaf() {
    for f in FIXTURES {
        let bytes = read(f);
        let m = manifest(f);
        assert_eq!(bytes.len() as u64, m["file_size"].as_u64().unwrap(), "{f} size");
        assert_eq!(sha(&bytes), m["file_sha256"].as_str().unwrap(), "{f} sha256");
        let tree = bpformat::decode(&bytes).unwrap_or_else(|e| panic!("{f}: {e}"));
        let leaves = m["leaves"].as_array().unwrap();
        assert_eq!(leaves.len() as u64, m["num_leaves"].as_u64().unwrap());
        assert_eq!(count_leaves(&tree), leaves.len(), "{f}: leaf count");
        for leaf in leaves {
            check_leaf(&tree, leaf, f);
        }
    }
}

#[test]
fn every_fixture_is_written_back_byte_for_byte() {
    for f in FIXTURES {
        let bytes = read(f);
        let tree = bpformat::decode(&bytes).unwrap();
        let opts = if f.contains("maxchunk64") {
            WriteOptions { max_chunk_bytes: 64 }
        } else {
            WriteOptions::default()
        };
        let out = bpformat::to_vec_with(&tree, &opts).unwrap();
        assert_eq!(
            sha(&out),
            manifest(f)["file_sha256"].as_str().unwrap(),
            "{f}: sha256 of the rewrite"
        );
        assert_eq!(out, bytes, "{f}: rewrite differs");
        // through the public write_to as well
        if !f.contains("maxchunk64") {
            let mut v = Vec::new();
            bpformat::write_to(&tree, &mut v).unwrap();
            assert_eq!(v, bytes, "{f}: write_to differs");
        }
    }
}

#[test]
fn chunked_fixture_reads_as_one_array_and_default_writer_does_not_chunk_it() {
    let tree = bpformat::decode(&read("chunked_toplevel_maxchunk64.bp")).unwrap();
    let Pytree::Tensor(t) = &tree else {
        panic!("expected a tensor, got {}", tree.kind())
    };
    assert_eq!(t.shape(), &[40]);
    let want: Vec<f32> = (0..40).map(|i| i as f32).collect();
    assert_eq!(t.as_slice::<f32>().unwrap(), &want[..]);
    // BrainPy's 1 GiB threshold: a 160-byte array is one ext.
    let plain = bpformat::to_vec(&tree).unwrap();
    assert_eq!(plain[0], 0xc7, "one ext8 for the whole array");
    assert_eq!(bpformat::decode(&plain).unwrap(), tree);
}

fn f32_zeros(shape: &[usize]) -> Pytree {
    Pytree::Tensor(Tensor::zeros(DType::F32, shape).unwrap())
}

#[test]
fn tutorial_state_built_in_rust_equals_brainpys_file() {
    // bp.checkpoints.save_pytree('a.bp', net.state_dict()) for the tutorial's first network.
    let mut lif = PytreeMap::default();
    lif.insert("Lif0.V".to_string(), f32_zeros(&[10]));
    lif.insert(
        "Lif0.spike".to_string(),
        Pytree::Tensor(Tensor::zeros(DType::Bool, &[10]).unwrap()),
    );
    let tree = Pytree::map()
        .with("SNN0", Pytree::map().with("SNN0.var", f32_zeros(&[1])))
        .with("Dense0", Pytree::map())
        .with("Lif0", Pytree::Map(lif))
        .with("ExponentialEuler0", Pytree::map());
    let out = bpformat::to_vec(&tree).unwrap();
    assert_eq!(out.len(), 166);
    assert_eq!(out, read("ex1_state_dict.bp"));

    // bp.save_state(net): the same without the integrator node.
    let Pytree::Map(mut m) = tree else { unreachable!() };
    m.shift_remove("ExponentialEuler0");
    assert_eq!(
        bpformat::to_vec(&Pytree::Map(m)).unwrap(),
        read("ex1_save_state.bp")
    );
}

#[test]
fn training_checkpoint_reads_as_the_tutorial_describes() {
    let tree = bpformat::decode(&read("ex2_training_ckpt.bp")).unwrap();
    assert_eq!(tree.at("epoch_i").unwrap().i64().unwrap(), 9);
    let loss = tree.at("train_loss").unwrap();
    assert!(
        matches!(loss.value(), Pytree::Tensor(t) if t.ndim() == 0),
        "0-d array, not a scalar"
    );
    assert_eq!(loss.f64().unwrap(), 0.6971248388290405);
    let net = tree.at("net").unwrap().value().to_state_tree().unwrap();
    let names: Vec<&str> = net.0.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "SNN0",
            "Lif0",
            "Integrator0",
            "Sequential0",
            "Sequential1",
            "Dense0",
            "Expon0",
            "Dense1",
            "Expon1"
        ]
    );
    assert_eq!(net.0["Dense0"].0["Dense0.W"].shape(), &[100, 10]);
}
