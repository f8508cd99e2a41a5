//! The `brainstate` command as a user runs it: on files the library wrote, on BrainPy's own
//! files, and on broken files (exit codes and the one-line messages).

use assert_cmd::Command;
use brainstate_core::ckpt::{save_pytree, save_pytree_with, Format, SaveOptions};
use brainstate_core::{pytree, Pytree};
use ndarray::{Array1, Array2};
use predicates::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn cmd() -> Command {
    Command::cargo_bin("brainstate").expect("the brainstate binary is built")
}

/// Runs the command, expects success, and returns its stdout as text.
fn stdout_ok(c: &mut Command) -> String {
    String::from_utf8(c.assert().success().get_output().stdout.clone()).unwrap()
}

/// Runs the command, expects exit status `code`, and returns its stderr.
fn stderr_with_code(c: &mut Command, code: i32) -> Vec<u8> {
    c.assert().code(code).get_output().stderr.clone()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../brainstate-core/tests/fixtures/brainpy")
        .join(name)
}

/// The tutorial's checkpoint `{'net': ..., 'epoch_i': 9, 'train_loss': 0.71}`, with a
/// recognisable Lif0.V (1.0, 2.0, ... 10.0).
fn tutorial_tree() -> Pytree {
    let v = Array1::from_iter((1..=10).map(|i| i as f32));
    pytree! {
        "net" => pytree! {
            "SNN0" => pytree! { "SNN0.var" => Array1::<f32>::zeros(1) },
            "Dense0" => Pytree::map(),
            "Lif0" => pytree! { "Lif0.V" => v, "Lif0.spike" => Array1::from_elem(10, false) },
        },
        "epoch_i" => 9,
        "train_loss" => 0.71f32,
    }
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn write_native(dir: &Path, name: &str, tree: &Pytree) -> PathBuf {
    let p = dir.join(name);
    save_pytree(&p, tree, true, None, false).expect("save");
    p
}

/// Asserts the failure printed exactly one line on stderr, without a panic trace.
fn one_line(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr).to_string();
    assert_eq!(s.lines().count(), 1, "stderr should be one line: {s:?}");
    assert!(!s.contains("panicked") && !s.contains("RUST_BACKTRACE"), "{s}");
    s
}

#[test]
fn inspect_a_native_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_native(dir.path(), "snn.ckpt", &tutorial_tree());
    let s = stdout_ok(cmd().arg("inspect").arg(&p));
    assert!(
        s.contains("format: native (brainstate native checkpoint (CBOR), format version 1.0)"),
        "{s}"
    );
    assert!(s.contains("leaves: 5 (4 arrays"), "{s}");
    assert!(s.contains("checksums: all 4 tensor CRC32C checksums hold"), "{s}");
    let line = |key: &str| {
        s.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("Lif0.V").contains("float32[10]") && line("Lif0.V").contains("40 B"),
        "{s}"
    );
    assert!(line("Lif0.spike").contains("bool[10]"), "{s}");
    assert!(line("Dense0").contains("{}"), "{s}");
    assert!(
        line("epoch_i").contains("int") && line("epoch_i").ends_with('9'),
        "{s}"
    );
    assert!(
        line("train_loss").contains("float32[]") && line("train_loss").ends_with(" 0.71"),
        "{s}"
    );
    // Nesting is shown by indentation.
    assert!(line("Lif0.V").starts_with("    Lif0.V"), "{s}");
}

#[test]
fn inspect_json_matches_independent_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_native(dir.path(), "snn.ckpt", &tutorial_tree());
    let out = stdout_ok(cmd().args(["inspect", "--json"]).arg(&p)).into_bytes();
    let doc: Value = serde_json::from_slice(&out).expect("one JSON document");
    let obj = doc.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["format", "leaves"]);
    assert_eq!(doc["format"], "native");
    let leaves = doc["leaves"].as_array().unwrap();
    let paths: Vec<String> = leaves
        .iter()
        .map(|l| {
            l["path"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert_eq!(
        paths,
        [
            "net/SNN0/SNN0.var",
            "net/Lif0/Lif0.V",
            "net/Lif0/Lif0.spike",
            "epoch_i",
            "train_loss"
        ]
    );
    let v = &leaves[1];
    assert_eq!(v["kind"], "tensor");
    assert_eq!(v["dtype"], "float32");
    assert_eq!(v["shape"], serde_json::json!([10]));
    assert_eq!(v["nbytes"], 40);
    let raw: Vec<u8> = (1..=10).flat_map(|i| (i as f32).to_le_bytes()).collect();
    assert_eq!(v["sha256"], sha(&raw));
    assert_eq!(leaves[2]["sha256"], sha(&[0u8; 10]));
    assert_eq!(leaves[3]["kind"], "int");
    assert_eq!(leaves[3]["dtype"], "int64");
    assert_eq!(leaves[3]["sha256"], sha(&9i64.to_le_bytes()));
    assert_eq!(leaves[4]["shape"], serde_json::json!([]));
    assert_eq!(leaves[4]["sha256"], sha(&0.71f32.to_le_bytes()));
}

#[test]
fn show_prints_numpy_style_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let big = Array2::from_shape_fn((256, 10), |(i, j)| (i * 10 + j) as f32);
    let tree = tutorial_tree().with("big", big);
    let p = write_native(dir.path(), "snn.ckpt", &tree);
    cmd().args(["show"]).arg(&p).arg("net/Lif0/Lif0.V").assert().success().stdout(
        "net/Lif0/Lif0.V: float32[10]\narray([ 1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10.], dtype=float32)\n",
    );
    cmd()
        .args(["show"])
        .arg(&p)
        .arg("net/Lif0/Lif0.spike")
        .assert()
        .success()
        .stdout(predicate::str::contains("array([False, False,"));
    cmd()
        .args(["show"])
        .arg(&p)
        .arg("epoch_i")
        .assert()
        .success()
        .stdout("epoch_i: int64[]\n9\n");
    let s = stdout_ok(cmd().args(["show"]).arg(&p).arg("big"));
    // numpy 2.4: repr(np.arange(2560).reshape(256, 10).astype(np.float32))
    let numpy = "array([[0.000e+00, 1.000e+00, 2.000e+00, ..., 7.000e+00, 8.000e+00,
        9.000e+00],
       [1.000e+01, 1.100e+01, 1.200e+01, ..., 1.700e+01, 1.800e+01,
        1.900e+01],
       [2.000e+01, 2.100e+01, 2.200e+01, ..., 2.700e+01, 2.800e+01,
        2.900e+01],
       ...,
       [2.530e+03, 2.531e+03, 2.532e+03, ..., 2.537e+03, 2.538e+03,
        2.539e+03],
       [2.540e+03, 2.541e+03, 2.542e+03, ..., 2.547e+03, 2.548e+03,
        2.549e+03],
       [2.550e+03, 2.551e+03, 2.552e+03, ..., 2.557e+03, 2.558e+03,
        2.559e+03]], shape=(256, 10), dtype=float32)";
    assert_eq!(s, format!("big: float32[256, 10]\n{numpy}\n"));
    let full = stdout_ok(cmd().args(["show", "--full"]).arg(&p).arg("big"));
    assert!(full.lines().count() > 256);
    // A subtree prints its outline.
    cmd()
        .args(["show"])
        .arg(&p)
        .arg("net/Lif0")
        .assert()
        .success()
        .stdout(predicate::str::contains("Lif0.V").and(predicate::str::contains("Lif0.spike")));
    // A wrong path names what is there.
    let out = stderr_with_code(cmd().args(["show"]).arg(&p).arg("net/Lif1"), 1);
    let e = one_line(&out);
    assert!(
        e.contains("no entry \"net/Lif1\"") && e.contains("SNN0, Dense0, Lif0"),
        "{e}"
    );
}

#[test]
fn diff_reports_changes_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_native(dir.path(), "a.ckpt", &tutorial_tree());
    let same = write_native(dir.path(), "same.ckpt", &tutorial_tree());
    let mut t = tutorial_tree();
    if let Pytree::Map(m) = &mut t {
        m.insert("epoch_i".into(), Pytree::Int(10));
        m.insert("note".into(), Pytree::Str("x".into()));
        if let Some(Pytree::Map(net)) = m.get_mut("net") {
            net.shift_remove("Dense0");
            if let Some(Pytree::Map(lif)) = net.get_mut("Lif0") {
                let v = Array1::from_iter((1..=10).map(|i| if i == 4 { 4.25f32 } else { i as f32 }));
                lif.insert("Lif0.V".into(), Pytree::from(v));
                lif.insert("Lif0.spike".into(), Pytree::from(Array1::from_elem(11, false)));
            }
        }
    }
    let b = write_native(dir.path(), "b.ckpt", &t);
    cmd()
        .arg("diff")
        .arg(&a)
        .arg(&same)
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("identical"));
    cmd().arg("diff").arg(&a).arg(&b).assert().code(1).stdout(
        "- net/Dense0: {}\n\
         ~ net/Lif0/Lif0.V: float32[10], 1 of 10 elements differ, max |a-b| = 0.25\n\
         ~ net/Lif0/Lif0.spike: bool[10] -> bool[11]\n\
         ~ epoch_i: int64[], 1 of 1 elements differ, max |a-b| = 1.0\n\
         + note: str\n\
         3 changed, 1 added, 1 removed\n",
    );
    // Trouble is 2, not 1 (which means "differ").
    let out = stderr_with_code(cmd().arg("diff").arg(&a).arg(dir.path().join("nope.ckpt")), 2);
    assert!(one_line(&out).contains("not found"));
}

#[test]
fn verify_and_convert_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_native(dir.path(), "a.ckpt", &tutorial_tree());
    cmd()
        .arg("verify")
        .arg(&a)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "structure valid, all 4 tensor checksums hold",
        ));
    let b = dir.path().join("b.ckpt");
    cmd()
        .arg("convert")
        .arg(&a)
        .arg(&b)
        .assert()
        .success()
        .stdout(predicate::str::contains("(native)"));
    cmd().arg("diff").arg(&a).arg(&b).assert().code(0);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same tree, same bytes"
    );
}

#[test]
fn bit_flips_truncation_and_garbage_in_native_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_native(dir.path(), "a.ckpt", &tutorial_tree());
    let bytes = std::fs::read(&a).unwrap();
    let pattern: Vec<u8> = (1..=10).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern)
        .expect("Lif0.V payload in the file");

    let mut flipped = bytes.clone();
    flipped[at + 5] ^= 0x10;
    let f = dir.path().join("flipped.ckpt");
    std::fs::write(&f, &flipped).unwrap();
    for sub in ["verify", "inspect"] {
        let out = stderr_with_code(cmd().arg(sub).arg(&f), 1);
        let e = one_line(&out);
        assert!(
            e.contains("fails its CRC32C") && e.contains("flipped.ckpt"),
            "{sub}: {e}"
        );
    }
    assert!(
        String::from_utf8_lossy(&cmd().arg("verify").arg(&f).output().unwrap().stderr)
            .starts_with("brainstate: FAILED: ")
    );

    let t = dir.path().join("truncated.ckpt");
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    let out = stderr_with_code(cmd().arg("verify").arg(&t), 1);
    assert!(one_line(&out).contains("truncated"), "{}", one_line(&out));

    let g = dir.path().join("garbage.ckpt");
    let garbage: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&g, garbage).unwrap();
    let out = stderr_with_code(cmd().arg("inspect").arg(&g), 1);
    assert!(one_line(&out).contains("not a checkpoint in any known format"));

    let e = dir.path().join("empty.ckpt");
    std::fs::write(&e, b"").unwrap();
    let out = stderr_with_code(cmd().arg("verify").arg(&e), 1);
    assert!(one_line(&out).contains("empty file"));

    let out = stderr_with_code(cmd().arg("inspect").arg(dir.path()), 1);
    assert!(one_line(&out).contains("not a regular file"));
    let out = stderr_with_code(cmd().arg("verify").arg(dir.path().join("missing.ckpt")), 1);
    assert!(one_line(&out).contains("not found"));

    // Every single-byte flip of the header region gives a clean error or a verified file,
    // never a crash.
    for i in (0..at.min(400)).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0x55;
        std::fs::write(&f, &b).unwrap();
        let o = cmd().arg("verify").arg(&f).output().unwrap();
        match o.status.code() {
            Some(0) => {}
            Some(1) => {
                one_line(&o.stderr);
            }
            other => panic!("byte {i}: exit {other:?}: {}", String::from_utf8_lossy(&o.stderr)),
        }
    }
}

#[test]
fn usage_errors_are_clap_errors() {
    cmd().assert().code(2).stderr(predicate::str::contains("Usage"));
    cmd()
        .args(["convert", "a", "b", "--to", "hdf5"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("hdf5"));
}

#[test]
fn brainpy_fixtures_inspect_like_their_descriptions() {
    for (name, arrays) in [
        ("ex1_save_state.bp", 3),
        ("ex2_training_ckpt.bp", 10),
        ("synthetic_tree.bp", 23),
        ("chunked_toplevel_maxchunk64.bp", 1),
    ] {
        let desc: Value =
            serde_json::from_slice(&std::fs::read(fixture(&format!("{name}.json"))).unwrap()).unwrap();
        let out = stdout_ok(cmd().args(["inspect", "--json"]).arg(fixture(name))).into_bytes();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["format"], "bp");
        // Every array of the description (ndarrays, numpy scalars, chunked arrays) is there with
        // the hash BrainPy's side computed.
        let ours = doc["leaves"].as_array().unwrap();
        let mut n = 0;
        for l in desc["leaves"].as_array().unwrap() {
            if l.get("sha256").is_none() {
                continue;
            }
            n += 1;
            let mine = ours
                .iter()
                .find(|m| m["path"] == l["path"])
                .unwrap_or_else(|| panic!("{name}: {}", l["path"]));
            assert_eq!(mine["sha256"], l["sha256"], "{name} {}", l["path"]);
            if let Some(d) = l.get("dtype") {
                assert_eq!(&mine["dtype"], d, "{name} {}", l["path"]);
            }
            if let Some(s) = l.get("shape") {
                assert_eq!(&mine["shape"], s, "{name} {}", l["path"]);
            }
        }
        assert_eq!(n, arrays, "{name}: arrays compared");
        cmd()
            .arg("verify")
            .arg(fixture(name))
            .assert()
            .code(0)
            .stdout(predicate::str::contains("bp format").and(predicate::str::contains("no checksums")));
    }
    let s = stdout_ok(cmd().arg("inspect").arg(fixture("ex2_training_ckpt.bp")));
    assert!(
        s.contains("format: bp (BrainPy checkpoint (Flax msgpack), no version field)"),
        "{s}"
    );
    assert!(s.contains("checksums: none in this format"), "{s}");
    cmd()
        .args(["show"])
        .arg(fixture("ex2_training_ckpt.bp"))
        .arg("train_loss")
        .assert()
        .success()
        .stdout(predicate::str::contains("array(0.69712484, dtype=float32)"));
}

#[test]
fn brainpy_fixture_converts_to_native_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let n = dir.path().join("snn.ckpt");
    cmd()
        .arg("convert")
        .arg(fixture("ex2_training_ckpt.bp"))
        .arg(&n)
        .assert()
        .success();
    cmd()
        .arg("verify")
        .arg(&n)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("checksums hold"));
    cmd()
        .arg("diff")
        .arg(fixture("ex2_training_ckpt.bp"))
        .arg(&n)
        .assert()
        .code(0);
    let back = dir.path().join("back.bp");
    cmd()
        .arg("convert")
        .arg(&n)
        .arg(&back)
        .assert()
        .success()
        .stdout(predicate::str::contains("(bp)"));
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(fixture("ex2_training_ckpt.bp")).unwrap(),
        "BrainPy -> native -> BrainPy gives BrainPy's bytes"
    );
    // --to wins over the extension.
    let odd = dir.path().join("odd.bp");
    cmd()
        .arg("convert")
        .arg(&n)
        .arg(&odd)
        .args(["--to", "native"])
        .assert()
        .success();
    cmd()
        .arg("inspect")
        .arg(&odd)
        .assert()
        .success()
        .stdout(predicate::str::contains("format: native"));
}

#[test]
fn broken_brainpy_files() {
    let bad = |n: &str| fixture(&format!("bad/ex2_training_ckpt.{n}.bp"));
    for n in ["garbage", "truncated", "len_flip"] {
        for sub in ["verify", "inspect"] {
            let out = stderr_with_code(cmd().arg(sub).arg(bad(n)), 1);
            let e = one_line(&out);
            assert!(e.contains(&format!("ex2_training_ckpt.{n}.bp")), "{n} {sub}: {e}");
        }
    }
    // Every single-byte flip of a small BrainPy file gives a clean error or a readable file.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("flip.bp");
    let orig = std::fs::read(fixture("ex1_save_state.bp")).unwrap();
    for i in 0..orig.len() {
        let mut b = orig.clone();
        b[i] ^= 0x41;
        std::fs::write(&f, &b).unwrap();
        let o = cmd().arg("inspect").arg(&f).output().unwrap();
        match o.status.code() {
            Some(0) => {}
            Some(1) => {
                one_line(&o.stderr);
            }
            other => panic!("byte {i}: exit {other:?}: {}", String::from_utf8_lossy(&o.stderr)),
        }
    }
    // A flipped data byte cannot be detected (BrainPy's format has no checksum), but diff finds it.
    cmd()
        .arg("verify")
        .arg(bad("data_flip"))
        .assert()
        .code(0)
        .stdout(predicate::str::contains("no checksums"));
    cmd()
        .arg("diff")
        .arg(fixture("ex2_training_ckpt.bp"))
        .arg(bad("data_flip"))
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "~ net/Lif0/Lif0.V: float32[256, 10], 1 of 2560 elements differ, max |a-b| = 6.414905e+37",
        ));
}

#[test]
fn safetensors_and_npz_conversions() {
    let dir = tempfile::tempdir().unwrap();
    let tree = pytree! {
        "net" => pytree! { "Lif0" => pytree! { "Lif0.V" => Array1::from_iter((1..=10).map(|i| i as f32)) } },
    };
    let a = write_native(dir.path(), "a.ckpt", &tree);
    for (ext, fmt) in [("safetensors", Format::Safetensors), ("npz", Format::Npz)] {
        let out = dir.path().join(format!("a.{ext}"));
        cmd().arg("convert").arg(&a).arg(&out).assert().success();
        cmd()
            .args(["inspect", "--json"])
            .arg(&out)
            .assert()
            .success()
            .stdout(predicate::str::contains(format!("\"format\": \"{ext}\"")));
        cmd().arg("diff").arg(&a).arg(&out).assert().code(0);
        // And the library's own writer gives a file the command reads.
        let lib = dir.path().join(format!("lib.{ext}"));
        let opts = SaveOptions {
            format: Some(fmt),
            ..SaveOptions::default()
        };
        save_pytree_with(&lib, &tree, &opts, None).unwrap();
        cmd().arg("diff").arg(&lib).arg(&out).assert().code(0);
    }
}

/// The README's Python snippet reads a native file, and numpy's SHA-256 of each array is the
/// hash `inspect --json` prints. python3 with numpy and cbor2 (requirements-test.txt) is
/// required: a missing one fails this test.
#[test]
fn readme_python_snippet_agrees_with_inspect_json() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = readme
        .split_once("## Reading a native file from Python")
        .expect("README section")
        .1;
    let code = section.split_once("```python\n").expect("python block").1;
    let code = code.split_once("```").expect("closing fence").0;
    let dir = tempfile::tempdir().unwrap();
    let p = write_native(dir.path(), "snn.ckpt", &tutorial_tree());
    let script = format!(
        "{}\nimport hashlib\nfor t in tensors:\n    print(hashlib.sha256(np.ascontiguousarray(t).tobytes()).hexdigest())\n",
        code.replace("\"snn.ckpt\"", &format!("{:?}", p.to_str().unwrap()))
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3 runs (pip install -r requirements-test.txt)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let numpy: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let json = stdout_ok(cmd().args(["inspect", "--json"]).arg(&p)).into_bytes();
    let doc: Value = serde_json::from_slice(&json).unwrap();
    let ours: Vec<String> = doc["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "tensor")
        .map(|l| l["sha256"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(numpy.len(), 4);
    assert_eq!(numpy, ours);
}
