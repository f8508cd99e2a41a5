//! safetensors and npz in Rust: trees round-trip exactly, dtypes a format cannot hold are typed
//! errors, and malformed files are typed errors.

use brainstate_core::interop::{npz, safetensors, InteropError};
use brainstate_core::{bpformat, DType, Pytree, PytreeMap, Tensor, C128};
use std::path::PathBuf;

fn st(tree: &Pytree) -> Vec<u8> {
    let mut v = Vec::new();
    safetensors::write_to(tree, &mut v).unwrap();
    v
}

fn nz(tree: &Pytree) -> Vec<u8> {
    let mut v = Vec::new();
    npz::write_to(tree, &mut v).unwrap();
    v
}

/// A tree with every leaf kind and the dtypes both formats hold.
fn rich_tree() -> Pytree {
    let mut lif = PytreeMap::default();
    lif.insert(
        "Lif0.V".to_string(),
        Pytree::Tensor(Tensor::from_vec(&[2, 3], vec![0.5f32, -1.0, 2.0, 3.0, 4.0, 5.0]).unwrap()),
    );
    lif.insert(
        "Lif0.spike".to_string(),
        Pytree::Tensor(Tensor::from_vec(&[3], vec![true, false, true]).unwrap()),
    );
    Pytree::map()
        .with(
            "net",
            Pytree::map()
                .with("SNN0", Pytree::map())
                .with("Lif0", Pytree::Map(lif))
                .with("ExponentialEuler0", Pytree::map()),
        )
        .with("epoch_i", 9)
        .with("big", Pytree::UInt(u64::MAX))
        .with("neg", Pytree::Int(i64::MIN))
        .with("train_loss", 0.697_124_8_f32)
        .with("lr", 0.1)
        .with("nan", f64::from_bits(0x7ff8_0000_0000_0001))
        .with("inf", f64::NEG_INFINITY)
        .with("c", C128::new(1.0, -0.0))
        .with("flag", true)
        .with("name", "Δt = 0.1 ms")
        .with("raw", vec![0u8, 255, 7])
        .with("none", Pytree::None)
        .with("sc", Pytree::Scalar(Tensor::scalar(1.5f64)))
        .with(
            "list",
            Pytree::List(vec![
                Pytree::Int(1),
                Pytree::Tensor(Tensor::from_vec(&[0], Vec::<i64>::new()).unwrap()),
            ]),
        )
        .with("u64", Tensor::from_vec(&[2], vec![u64::MAX, 1]).unwrap())
        .with(
            "f16",
            Tensor::from_vec(&[1], vec![half::f16::from_f32(0.5)]).unwrap(),
        )
        .with("i8", Tensor::from_vec(&[2, 1, 1], vec![-1i8, 1]).unwrap())
}

fn assert_same(a: &Pytree, b: &Pytree) {
    // Pytree's == compares floats by value (NaN != NaN); compare the BrainPy encodings instead,
    // which are bitwise and keep the order.
    assert_eq!(
        bpformat::to_vec(a).unwrap(),
        bpformat::to_vec(b).unwrap(),
        "{a}\n!=\n{b}"
    );
}

#[test]
fn safetensors_round_trip_keeps_the_whole_tree() {
    let t = rich_tree();
    let b = st(&t);
    assert!(safetensors::looks_like(&b));
    assert!(!npz::looks_like(&b));
    assert!(!bpformat::looks_like(&b));
    assert_same(&safetensors::decode(&b).unwrap(), &t);
    // The tensors carry their paths as names.
    let text = String::from_utf8_lossy(&b[8..]);
    assert!(text.contains("\"net/Lif0/Lif0.V\""), "{text}");
    assert!(text.contains("\"list/1\""));
}

#[test]
fn npz_round_trip_keeps_the_whole_tree() {
    let mut t = rich_tree();
    if let Pytree::Map(m) = &mut t {
        m.insert(
            "c64".into(),
            Tensor::from_vec(&[1], vec![brainstate_core::C64::new(1.0, 2.0)])
                .unwrap()
                .into(),
        );
        m.insert(
            "c128".into(),
            Tensor::from_vec(&[1], vec![C128::new(1.0, 2.0)]).unwrap().into(),
        );
    }
    let b = nz(&t);
    assert!(npz::looks_like(&b));
    assert!(!safetensors::looks_like(&b));
    assert!(!bpformat::looks_like(&b));
    assert_same(&npz::decode(&b).unwrap(), &t);
}

#[test]
fn every_dtype_each_format_holds() {
    for d in DType::ALL {
        let bytes: Vec<u8> = (0..4 * d.itemsize())
            .map(|i| if d == DType::Bool { (i % 2) as u8 } else { i as u8 })
            .collect();
        let x = Tensor::from_le_bytes(d, &[2, 2], &bytes).unwrap();
        let tree = Pytree::map().with("x", x);
        let mut out = Vec::new();
        match (d, safetensors::write_to(&tree, &mut out)) {
            (
                DType::C64 | DType::C128,
                Err(InteropError::UnsupportedDtype {
                    path,
                    format: "safetensors",
                    ..
                }),
            ) => {
                assert_eq!(path, "x")
            }
            (DType::C64 | DType::C128, other) => panic!("{d}: {other:?}"),
            (_, Ok(())) => assert_eq!(safetensors::decode(&out).unwrap(), tree, "{d}"),
            (_, Err(e)) => panic!("{d}: {e}"),
        }
        let mut out = Vec::new();
        match (d, npz::write_to(&tree, &mut out)) {
            (
                DType::BF16,
                Err(InteropError::UnsupportedDtype {
                    format: "npz", dtype, ..
                }),
            ) => assert_eq!(dtype, "bfloat16"),
            (DType::BF16, other) => panic!("{d}: {other:?}"),
            (_, Ok(())) => assert_eq!(npz::decode(&out).unwrap(), tree, "{d}"),
            (_, Err(e)) => panic!("{d}: {e}"),
        }
    }
}

#[test]
fn brainpy_fixture_through_both_formats() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/brainpy/ex2_training_ckpt.bp");
    let tree = bpformat::decode(&std::fs::read(p).unwrap()).unwrap();
    assert_eq!(safetensors::decode(&st(&tree)).unwrap(), tree);
    assert_eq!(npz::decode(&nz(&tree)).unwrap(), tree);
}

#[test]
fn trees_the_formats_cannot_name() {
    let mut out = Vec::new();
    for write in [safetensors::write_to, npz::write_to] {
        let e = write(&Pytree::map().with("a/b", 1), &mut out).unwrap_err();
        assert!(
            matches!(e, InteropError::KeyHasSlash { ref key, .. } if key == "a/b"),
            "{e}"
        );
        let e = write(&Pytree::Tensor(Tensor::scalar(1.0f32)), &mut out).unwrap_err();
        assert!(matches!(e, InteropError::RootNotContainer("tensor")), "{e}");
    }
    let e = safetensors::write_to(&Pytree::map().with("__metadata__", Tensor::scalar(1u8)), &mut out)
        .unwrap_err();
    assert!(matches!(e, InteropError::ReservedName(_)), "{e}");
    let e = npz::write_to(
        &Pytree::map().with("__brainstate_pytree__", Tensor::scalar(1u8)),
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(e, InteropError::ReservedName(_)), "{e}");
    // A failing writer.
    struct Fail;
    impl std::io::Write for Fail {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    assert!(matches!(
        safetensors::write_to(&rich_tree(), &mut Fail),
        Err(InteropError::Io(_))
    ));
    assert!(matches!(
        npz::write_to(&rich_tree(), &mut Fail),
        Err(InteropError::Io(_))
    ));
}

/// A safetensors file with the given header JSON and data.
fn st_raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

#[test]
fn malformed_safetensors_files() {
    type Check = fn(&InteropError) -> bool;
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (vec![], |e| matches!(e, InteropError::Safetensors(_))),
        (vec![0xff; 8], |e| matches!(e, InteropError::Safetensors(_))),
        (st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", &[0; 4]), |e| matches!(e, InteropError::Safetensors(_))),
        (st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", &[0; 8]), |e| matches!(e, InteropError::Safetensors(_))),
        (st_raw("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", &[0; 2]), |e| matches!(e, InteropError::UnsupportedDtype { .. })),
        (st_raw("{\"a\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]}}", &[0, 9]), |e| matches!(e, InteropError::Tensor { .. })),
        (st_raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[0, 4611686018427387904],\"data_offsets\":[0,0]}}", &[]), |e| matches!(e, InteropError::Tensor { .. })),
        (st_raw("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a/b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", &[1, 2]), |e| matches!(e, InteropError::KeyConflict(_))),
        (st_raw("{\"__metadata__\":{\"brainstate.pytree\":\"{]\"}}", &[]), |e| matches!(e, InteropError::BadSkeleton(_))),
        (st_raw("{\"__metadata__\":{\"brainstate.pytree\":\"{\\\"brainstate_pytree\\\":1,\\\"tree\\\":{\\\"tensor\\\":\\\"x\\\"}}\"}}", &[]), |e| matches!(e, InteropError::MissingTensor(_))),
        (st_raw("{\"__metadata__\":{\"brainstate.pytree\":\"{\\\"brainstate_pytree\\\":1,\\\"tree\\\":{\\\"map\\\":[]}}\"},\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", &[1]), |e| matches!(e, InteropError::UnlistedTensor(_))),
    ];
    for (i, (b, ok)) in cases.iter().enumerate() {
        match safetensors::decode(b) {
            Err(e) if ok(&e) => {}
            other => panic!("case {i}: {other:?}"),
        }
    }
    // Files without a skeleton read as nested maps in file order.
    let b = st_raw("{\"b/x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[1,2]}}", &[1, 2]);
    let t = safetensors::decode(&b).unwrap();
    assert_eq!(
        t,
        Pytree::map()
            .with(
                "b",
                Pytree::map().with("x", Tensor::from_vec(&[1], vec![1u8]).unwrap())
            )
            .with("a", Tensor::scalar(2u8))
    );
}

#[test]
fn malformed_skeletons() {
    // Each skeleton is put into an otherwise valid safetensors file without tensors.
    for (sk, want) in [
        ("{\"tree\":{\"map\":[]}}", "version"),
        ("{\"brainstate_pytree\":1}", "tree"),
        (
            "{\"brainstate_pytree\":1,\"tree\":{\"map\":[[\"a\",{\"none\":null}],[\"a\",{\"none\":null}]]}}",
            "duplicate",
        ),
        ("{\"brainstate_pytree\":1,\"tree\":{\"int\":\"1.5\"}}", "int"),
        ("{\"brainstate_pytree\":1,\"tree\":{\"float\":\"abc\"}}", "float"),
        ("{\"brainstate_pytree\":1,\"tree\":{\"bytes\":\"0g\"}}", "bytes"),
        ("{\"brainstate_pytree\":1,\"tree\":{\"what\":1}}", "unknown"),
        (
            "{\"brainstate_pytree\":1,\"tree\":{\"map\":[[1,{\"none\":null}]]}}",
            "entry",
        ),
        (
            "{\"brainstate_pytree\":1,\"tree\":{\"complex\":[\"1\"]}}",
            "complex",
        ),
        ("{\"brainstate_pytree\":1,\"tree\":{\"bool\":1}}", "bool"),
        ("{\"brainstate_pytree\":1,\"tree\":[]}", "one-key"),
    ] {
        let header = serde_json::json!({ "__metadata__": { "brainstate.pytree": sk } }).to_string();
        match safetensors::decode(&st_raw(&header, &[])) {
            Err(InteropError::BadSkeleton(m)) => assert!(m.contains(want), "{sk}: {m}"),
            other => panic!("{sk}: {other:?}"),
        }
    }
    // A scalar node must name a 0-d tensor.
    let header = serde_json::json!({
        "__metadata__": { "brainstate.pytree": "{\"brainstate_pytree\":1,\"tree\":{\"map\":[[\"s\",{\"scalar\":\"s\"}]]}}" },
        "s": { "dtype": "U8", "shape": [1], "data_offsets": [0, 1] }
    })
    .to_string();
    assert!(matches!(
        safetensors::decode(&st_raw(&header, &[1])),
        Err(InteropError::BadSkeleton(_))
    ));
}

/// An npz from members (name, bytes), stored.
fn zip_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (n, b) in members {
        z.start_file(
            *n,
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        z.write_all(b).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

#[test]
fn malformed_npz_files() {
    let hdr = |descr: &str, shape: &str| {
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"PK\x03\x04 not a zip".to_vec(), "malformed npz archive"),
        (vec![], "malformed npz archive"),
        (zip_of(&[("a.txt", vec![1])]), "not an .npy"),
        (
            zip_of(&[("a.npy", b"\x93NUMPX\x01\x00\x00\x00".to_vec())]),
            "magic",
        ),
        (
            zip_of(&[("a.npy", b"\x93NUMPY\x09\x00\x00\x00".to_vec())]),
            "version",
        ),
        (zip_of(&[("a.npy", npy("{'descr': '<f4'", &[]))]), "unreadable"),
        (
            zip_of(&[("a.npy", b"\x93NUMPY\x01\x00\xff\xff{}".to_vec())]),
            "exceeds",
        ),
        (
            zip_of(&[("a.npy", npy(&hdr(">f4", "(1,)"), &[0; 4]))]),
            "cannot hold",
        ),
        (zip_of(&[("a.npy", npy(&hdr("<f4", "(2,)"), &[0; 4]))]), "needs"),
        (zip_of(&[("a.npy", npy(&hdr("|b1", "(1,)"), &[3]))]), "bool"),
        (
            zip_of(&[("a.npy", npy(&hdr("<f4", "(0, 4611686018427387904)"), &[]))]),
            "too large",
        ),
        (
            zip_of(&[
                ("a.npy", npy(&hdr("|u1", "(1,)"), &[1])),
                ("a/b.npy", npy(&hdr("|u1", "(1,)"), &[1])),
            ]),
            "both",
        ),
        (
            zip_of(&[("__brainstate_pytree__.npy", npy(&hdr("<f4", "()"), &[0; 4]))]),
            "unicode",
        ),
        (
            zip_of(&[("__brainstate_pytree__.npy", npy(&hdr("<U1", "()"), &[0xff; 4]))]),
            "code point",
        ),
        (
            zip_of(&[(
                "__brainstate_pytree__.npy",
                npy(&hdr("<U2", "()"), &[0x41, 0, 0, 0]),
            )]),
            "declared length",
        ),
    ];
    for (b, want) in &cases {
        match npz::decode(b) {
            Err(e) => assert!(e.to_string().contains(want), "{want}: {e}"),
            Ok(t) => panic!("{want}: decoded {t:?}"),
        }
    }
    // Fortran-order arrays come back in C order; npz without a skeleton reads as nested maps.
    let f = zip_of(&[(
        "m/x.npy",
        npy(
            "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }",
            &[
                1, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0, 6, 0, 0, 0,
            ],
        ),
    )]);
    let t = npz::decode(&f).unwrap();
    assert_eq!(
        t.at("m/x").unwrap().tensor().unwrap(),
        &Tensor::from_vec(&[2, 3], vec![1i32, 2, 3, 4, 5, 6]).unwrap()
    );
}
