//! Runs the Python reader of docs/FORMAT.md (cbor2 + numpy) on a file the library wrote.
//! python3 with cbor2 and numpy is required: a missing one fails the test loudly.

mod common_ckpt;
use brainstate_core::ckpt::save_pytree;
use brainstate_core::{DType, Pytree};
use common_ckpt::*;
use std::fmt::Write;

fn reader_snippet() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md")).unwrap();
    let start = doc
        .find("<!-- python-reader:begin -->")
        .expect("begin marker in FORMAT.md");
    let end = doc
        .find("<!-- python-reader:end -->")
        .expect("end marker in FORMAT.md");
    let block = &doc[start..end];
    let code = block.split_once("```python\n").expect("python fence").1;
    code.rsplit_once("```").expect("closing fence").0.to_string()
}

const CHECK: &str = r#"
import struct, sys
def walk(x, p):
    if isinstance(x, dict):
        print(f"{p}\tmap {len(x)}")
        for k, v in x.items():
            walk(v, f"{p}/{k}")
    elif isinstance(x, list):
        print(f"{p}\tlist {len(x)}")
        for i, v in enumerate(x):
            walk(v, f"{p}/{i}")
    elif isinstance(x, np.ndarray):
        print(f"{p}\ttensor {x.dtype.name} {','.join(map(str, x.shape))} {x.tobytes().hex()}")
    elif isinstance(x, np.generic):
        print(f"{p}\tscalar {x.dtype.name} {x.tobytes().hex()}")
    elif isinstance(x, bool):
        print(f"{p}\tbool {x}")
    elif isinstance(x, int):
        print(f"{p}\tint {x}")
    elif isinstance(x, float):
        print(f"{p}\tfloat {struct.pack('<d', x).hex()}")
    elif isinstance(x, complex):
        print(f"{p}\tcomplex {struct.pack('<d', x.real).hex()} {struct.pack('<d', x.imag).hex()}")
    elif isinstance(x, str):
        print(f"{p}\tstr {x.encode().hex()}")
    elif isinstance(x, bytes):
        print(f"{p}\tbytes {x.hex()}")
    elif x is None:
        print(f"{p}\tnone")
    else:
        raise TypeError(type(x))
walk(load_brainstate(sys.argv[1]), "")
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn expected(t: &Pytree, p: &str, out: &mut String) {
    let dt = |d: DType| if d == DType::BF16 { "uint16" } else { d.name() };
    match t {
        Pytree::Map(m) => {
            writeln!(out, "{p}\tmap {}", m.len()).unwrap();
            for (k, v) in m {
                expected(v, &format!("{p}/{k}"), out);
            }
        }
        Pytree::List(l) => {
            writeln!(out, "{p}\tlist {}", l.len()).unwrap();
            for (i, v) in l.iter().enumerate() {
                expected(v, &format!("{p}/{i}"), out);
            }
        }
        Pytree::Tensor(x) => {
            let shape: Vec<String> = x.shape().iter().map(|d| d.to_string()).collect();
            writeln!(
                out,
                "{p}\ttensor {} {} {}",
                dt(x.dtype()),
                shape.join(","),
                hex(&x.le_bytes())
            )
            .unwrap()
        }
        Pytree::Scalar(x) => writeln!(out, "{p}\tscalar {} {}", dt(x.dtype()), hex(&x.le_bytes())).unwrap(),
        Pytree::Bool(b) => writeln!(out, "{p}\tbool {}", if *b { "True" } else { "False" }).unwrap(),
        Pytree::Int(i) => writeln!(out, "{p}\tint {i}").unwrap(),
        Pytree::UInt(u) => writeln!(out, "{p}\tint {u}").unwrap(),
        Pytree::Float(f) => writeln!(out, "{p}\tfloat {}", hex(&f.to_le_bytes())).unwrap(),
        Pytree::Complex(c) => writeln!(
            out,
            "{p}\tcomplex {} {}",
            hex(&c.re.to_le_bytes()),
            hex(&c.im.to_le_bytes())
        )
        .unwrap(),
        Pytree::Str(s) => writeln!(out, "{p}\tstr {}", hex(s.as_bytes())).unwrap(),
        Pytree::Bytes(b) => writeln!(out, "{p}\tbytes {}", hex(b)).unwrap(),
        Pytree::None => writeln!(out, "{p}\tnone").unwrap(),
    }
}

#[test]
fn python_reader_in_format_md_reads_our_file() {
    let d = tempdir("python");
    let file = d.join("every.ckpt");
    let tree = every_kind();
    save_pytree(&file, &tree, true, None, false).unwrap();
    let script = d.join("reader.py");
    std::fs::write(&script, reader_snippet() + CHECK).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .expect("python3 must be installed to check the documented reader (pip install cbor2 numpy)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the documented Python reader failed:\n{stderr}"
    );
    let mut want = String::new();
    expected(&tree, "", &mut want);
    let got = String::from_utf8(out.stdout).unwrap();
    for (g, w) in got.lines().zip(want.lines()) {
        assert_eq!(g, w);
    }
    assert_eq!(got.lines().count(), want.lines().count());
}
