//! Python reads what we write and we read what Python writes: numpy's `np.load` for npz, the
//! `safetensors` package for safetensors. These tests fail (never skip) when `python3` with
//! numpy and safetensors is missing: install `requirements-test.txt`.

use brainstate_core::interop::{npz, safetensors};
use brainstate_core::{DType, Pytree, PytreeMap, Tensor, C64};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("brainstate-interop-py-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a Python program with `args`; panics with its output unless it exits 0.
fn python(code: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 is required for this test (requirements-test.txt): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python failed:\n{text}");
    text
}

fn tree() -> Pytree {
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
                .with("Lif0", Pytree::Map(lif)),
        )
        .with("epoch_i", 9)
        .with("train_loss", 0.75f32)
        .with(
            "w64",
            Tensor::from_vec(&[2, 2], vec![1.0f64, 2.0, 3.0, 4.0]).unwrap(),
        )
        .with("u64", Tensor::from_vec(&[2], vec![u64::MAX, 7]).unwrap())
        .with("i8", Tensor::from_vec(&[3], vec![-128i8, 0, 127]).unwrap())
        .with(
            "f16",
            Tensor::from_vec(&[2], vec![half::f16::from_f32(0.5), half::f16::from_f32(-2.0)]).unwrap(),
        )
        .with("sc", Pytree::Scalar(Tensor::scalar(1.5f64)))
}

const CHECK_COMMON: &str = r#"
import numpy as np
def check(get):
    v = get("net/Lif0/Lif0.V"); assert v.dtype == np.float32 and v.shape == (2, 3), v
    assert v.tolist() == [[0.5, -1.0, 2.0], [3.0, 4.0, 5.0]], v
    s = get("net/Lif0/Lif0.spike"); assert s.dtype == np.bool_ and s.tolist() == [True, False, True], s
    l = get("train_loss"); assert l.dtype == np.float32 and l.shape == () and float(l) == 0.75, l
    w = get("w64"); assert w.dtype == np.float64 and w.tolist() == [[1, 2], [3, 4]], w
    u = get("u64"); assert u.dtype == np.uint64 and u.tolist() == [2**64 - 1, 7], u
    i = get("i8"); assert i.dtype == np.int8 and i.tolist() == [-128, 0, 127], i
    h = get("f16"); assert h.dtype == np.float16 and h.tolist() == [0.5, -2.0], h
    sc = get("sc"); assert sc.dtype == np.float64 and sc.shape == () and float(sc) == 1.5, sc
"#;

#[test]
fn numpy_reads_our_npz() {
    let d = tmp("npz");
    let p = d.join("a.npz");
    let mut t = tree();
    if let Pytree::Map(m) = &mut t {
        m.insert(
            "c64".into(),
            Tensor::from_vec(&[1], vec![C64::new(1.0, -2.0)]).unwrap().into(),
        );
    }
    let mut f = std::fs::File::create(&p).unwrap();
    npz::write_to(&t, &mut f).unwrap();
    drop(f);
    let code = format!(
        "{CHECK_COMMON}
import sys, json
z = np.load(sys.argv[1])
check(lambda k: z[k])
assert z['c64'].dtype == np.complex64 and z['c64'].tolist() == [1 - 2j]
sk = json.loads(str(z['__brainstate_pytree__']))
assert sk['brainstate_pytree'] == 1
node = dict(sk['tree']['map'])
assert node['epoch_i'] == {{'int': '9'}}, node['epoch_i']
assert node['net'] == {{'map': [['SNN0', {{'map': []}}], ['Lif0', {{'map': [['Lif0.V', {{'tensor': 'net/Lif0/Lif0.V'}}], ['Lif0.spike', {{'tensor': 'net/Lif0/Lif0.spike'}}]]}}]]}}
assert node['sc'] == {{'scalar': 'sc'}}
print('numpy read', len(z.files), 'members')
"
    );
    let out = python(&code, &[&p]);
    assert!(out.contains("numpy read 10 members"), "{out}");
}

#[test]
fn python_safetensors_reads_ours() {
    let d = tmp("st");
    let p = d.join("a.safetensors");
    let mut f = std::fs::File::create(&p).unwrap();
    safetensors::write_to(&tree(), &mut f).unwrap();
    drop(f);
    let code = format!(
        "{CHECK_COMMON}
import sys, json
from safetensors.numpy import load_file
from safetensors import safe_open
t = load_file(sys.argv[1])
check(lambda k: t[k])
with safe_open(sys.argv[1], framework='np') as f:
    meta = f.metadata()
sk = json.loads(meta['brainstate.pytree'])
assert [k for k, _ in sk['tree']['map']] == ['net', 'epoch_i', 'train_loss', 'w64', 'u64', 'i8', 'f16', 'sc']
print('safetensors read', len(t), 'tensors')
"
    );
    let out = python(&code, &[&p]);
    assert!(out.contains("safetensors read 8 tensors"), "{out}");
}

#[test]
fn we_read_what_python_writes() {
    let d = tmp("fromPy");
    let (a, b, c) = (
        d.join("plain.npz"),
        d.join("packed.npz"),
        d.join("py.safetensors"),
    );
    python(
        r#"
import sys, numpy as np
from safetensors.numpy import save_file
m = np.arange(6, dtype=np.int32).reshape(2, 3)
np.savez(sys.argv[1], **{"net/Dense0/Dense0.W": np.ones((2, 2), np.float32), "fortran": np.asfortranarray(m), "flag": np.array(True), "c": np.array([1+2j])})
np.savez_compressed(sys.argv[2], w=np.linspace(0, 1, 1000), e=np.zeros((0, 3), np.uint16))
save_file({"net/Lif0/Lif0.V": np.full((2, 5), 0.25, np.float32), "step": np.array(3, np.int64), "h": np.array([1.5], np.float16)}, sys.argv[3])
"#,
        &[&a, &b, &c],
    );
    let t = npz::decode(&std::fs::read(&a).unwrap()).unwrap();
    assert_eq!(
        t.at("net/Dense0/Dense0.W").unwrap().tensor().unwrap(),
        &Tensor::from_vec(&[2, 2], vec![1.0f32; 4]).unwrap()
    );
    assert_eq!(
        t.at("fortran").unwrap().tensor().unwrap(),
        &Tensor::from_vec(&[2, 3], (0..6).collect::<Vec<i32>>()).unwrap()
    );
    assert_eq!(t.at("flag").unwrap().tensor().unwrap(), &Tensor::scalar(true));
    assert_eq!(t.at("c").unwrap().tensor().unwrap().dtype(), DType::C128);
    let t = npz::decode(&std::fs::read(&b).unwrap()).unwrap();
    let w = t
        .at("w")
        .unwrap()
        .tensor()
        .unwrap()
        .as_slice::<f64>()
        .unwrap()
        .to_vec();
    assert_eq!((w.len(), w[0], w[999]), (1000, 0.0, 1.0));
    assert_eq!(t.at("e").unwrap().tensor().unwrap().shape(), &[0, 3]);
    let t = safetensors::decode(&std::fs::read(&c).unwrap()).unwrap();
    assert_eq!(
        t.at("net/Lif0/Lif0.V").unwrap().tensor().unwrap(),
        &Tensor::from_vec(&[2, 5], vec![0.25f32; 10]).unwrap()
    );
    assert_eq!(t.at("step").unwrap().i64().unwrap(), 3);
    assert_eq!(t.at("h").unwrap().tensor().unwrap().dtype(), DType::F16);
}
