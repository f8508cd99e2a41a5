//! Moving checkpoints between BrainPy and Rust.
//!
//! ```text
//! cargo run --example brainpy_interop                  # BrainPy's tutorial checkpoint into the Rust model and back
//! cargo run --example brainpy_interop -- write <dir>   # .bp files for BrainPy to load
//! cargo run --example brainpy_interop -- check <dir>   # checks the .bp files BrainPy wrote
//! cargo run --example brainpy_interop -- read <file>   # prints any BrainPy checkpoint
//! ```
//!
//! `scripts/brainpy-roundtrip.sh` runs `write`, has the real BrainPy load and check the files
//! (`bp.checkpoints.load_pytree`, `bp.load_state`) and write its own, then runs `check`.
//! The trees here are built by formulas the script's Python side repeats.

use brainstate::bpformat::{self, WriteOptions};
use brainstate::ckpt::{load_pytree, save_pytree};
use brainstate::nn::{Mode, SnnConfig, TutorialSnn};
use brainstate::{load_state_with, pytree, save_state, LoadOptions};
use brainstate::{DType, Pytree, PytreeMap, Tensor, C128, C64};
use rand::SeedableRng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Six values 0..6 of `dtype` (bool: odd ones true; complex: i - i*j), shape (2, 3).
fn arange6(dtype: DType) -> Tensor {
    let s = [2, 3];
    let r = 0..6u8;
    match dtype {
        DType::Bool => Tensor::from_vec(&s, r.map(|i| i % 2 == 1).collect()),
        DType::U8 => Tensor::from_vec(&s, r.collect::<Vec<u8>>()),
        DType::U16 => Tensor::from_vec(&s, r.map(u16::from).collect()),
        DType::U32 => Tensor::from_vec(&s, r.map(u32::from).collect()),
        DType::U64 => Tensor::from_vec(&s, r.map(u64::from).collect()),
        DType::I8 => Tensor::from_vec(&s, r.map(|i| i as i8).collect()),
        DType::I16 => Tensor::from_vec(&s, r.map(i16::from).collect()),
        DType::I32 => Tensor::from_vec(&s, r.map(i32::from).collect()),
        DType::I64 => Tensor::from_vec(&s, r.map(i64::from).collect()),
        DType::F16 => Tensor::from_le_bytes(
            dtype,
            &s,
            &r.flat_map(|i| f16_bits(i).to_le_bytes()).collect::<Vec<u8>>(),
        ),
        // bfloat16 is the upper half of float32 (exact for small integers).
        DType::BF16 => Tensor::from_le_bytes(
            dtype,
            &s,
            &r.flat_map(|i| (((i as f32).to_bits() >> 16) as u16).to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        DType::F32 => Tensor::from_vec(&s, r.map(f32::from).collect()),
        DType::F64 => Tensor::from_vec(&s, r.map(f64::from).collect()),
        DType::C64 => Tensor::from_vec(&s, r.map(|i| C64::new(i as f32, 0.0 - i as f32)).collect()),
        DType::C128 => Tensor::from_vec(&s, r.map(|i| C128::new(i as f64, 0.0 - i as f64)).collect()),
    }
    .expect("six values")
}

/// IEEE half-precision bits of a small non-negative integer.
fn f16_bits(i: u8) -> u16 {
    if i == 0 {
        return 0;
    }
    let e = 7 - i.leading_zeros() as u16; // floor(log2 i)
    let mantissa = ((i as u16) << (10 - e)) & 0x3ff;
    ((e + 15) << 10) | mantissa
}

/// Every kind of leaf BrainPy's format holds.
fn every_kind() -> Pytree {
    let arrays: PytreeMap = DType::ALL
        .into_iter()
        .map(|d| (d.name().to_string(), Pytree::Tensor(arange6(d))))
        .collect();
    Pytree::map()
        .with("arrays", Pytree::Map(arrays))
        .with("u64_max", Tensor::from_vec(&[1], vec![u64::MAX]).expect("1"))
        .with("zero_d", Tensor::scalar(2.5f32))
        .with("np_scalar_f32", Pytree::Scalar(Tensor::scalar(1.5f32)))
        .with("np_scalar_i64", Pytree::Scalar(Tensor::scalar(-7i64)))
        .with("np_scalar_bool", Pytree::Scalar(Tensor::scalar(true)))
        .with("int", 42)
        .with("neg", -5)
        .with("big", Pytree::UInt(u64::MAX))
        .with("i64min", i64::MIN)
        .with("float", 0.1)
        .with("complex", C128::new(1.0, 2.0))
        .with("bool", true)
        .with("str", "Δt = 0.1 ms")
        .with("bytes", vec![0u8, 255])
        .with("none", Pytree::None)
        .with(
            "nested",
            Pytree::map().with(
                "a",
                Pytree::map().with("b", Tensor::from_vec(&[2], vec![1.0f64, 2.0]).expect("2")),
            ),
        )
        .with("empty", Pytree::map())
        .with(
            "list",
            Pytree::List(vec![
                1.into(),
                "x".into(),
                Tensor::from_vec(&[1], vec![3i16]).expect("1").into(),
            ]),
        )
}

/// `np.arange(40, dtype=float32)`: written chunked with a 64-byte limit.
fn big_array() -> Pytree {
    Pytree::Tensor(Tensor::from_vec(&[40], (0..40).map(|i| i as f32).collect()).expect("40"))
}

/// `np.arange(6, dtype=float32).reshape(2, 3) / 4`: a bare array as the whole file.
fn bare_array() -> Pytree {
    Pytree::Tensor(Tensor::from_vec(&[2, 3], (0..6).map(|i| i as f32 / 4.0).collect()).expect("6"))
}

/// The tutorial's first network (`net.state_dict()`), fresh (`zeros`) or with known values
/// (`SNN0.var = 3.5`, `Lif0.V[i] = i / 8`, `Lif0.spike[i] = i % 3 == 0`).
fn tutorial(zeros: bool) -> Pytree {
    let var = if zeros { 0.0 } else { 3.5 };
    let v: Vec<f32> = (0..10)
        .map(|i| if zeros { 0.0 } else { i as f32 / 8.0 })
        .collect();
    let spike: Vec<bool> = (0..10).map(|i| !zeros && i % 3 == 0).collect();
    let mut lif = PytreeMap::default();
    lif.insert(
        "Lif0.V".to_string(),
        Pytree::from(Tensor::from_vec(&[10], v).expect("10")),
    );
    lif.insert(
        "Lif0.spike".to_string(),
        Pytree::from(Tensor::from_vec(&[10], spike).expect("10")),
    );
    Pytree::map()
        .with(
            "SNN0",
            Pytree::map().with("SNN0.var", Tensor::from_vec(&[1], vec![var as f32]).expect("1")),
        )
        .with("Dense0", Pytree::map())
        .with("Lif0", Pytree::Map(lif))
        .with("ExponentialEuler0", Pytree::map())
}

/// The checkpoint BrainPy wrote in its tutorial (`ex2_training_ckpt.bp`, bundled with the tests).
pub fn brainpy_tutorial_checkpoint() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("brainstate-core/tests/fixtures/brainpy/ex2_training_ckpt.bp")
}

/// Loads BrainPy's tutorial checkpoint into the Rust twin of its model, then saves the model
/// as the tutorial does into `out_dir/snn_from_rust.bp`, a file BrainPy loads; returns whether
/// that file is byte-identical to BrainPy's.
pub fn demo(bp_file: &Path, out_dir: &Path, out: &mut dyn Write) -> Result<bool, Box<dyn std::error::Error>> {
    let ckpt = load_pytree(bp_file, None, true)?;
    writeln!(out, "checkpoint written by BrainPy: {}", bp_file.display())?;
    let epoch = ckpt.get("epoch_i")?.i64()?;
    let loss = ckpt.get("train_loss")?.tensor()?.clone();
    writeln!(
        out,
        "epoch_i = {epoch}, train_loss = {:?}",
        ckpt.get("train_loss")?.f64()?
    )?;
    // The tutorial's SNN, built in training mode; its state adopts the file's batch size.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut net = TutorialSnn::new(&SnnConfig::default(), Mode::training(), &mut rng)?;
    let report = load_state_with(&mut net, &ckpt.get("net")?.state_tree()?, &LoadOptions::strict())?;
    writeln!(out, "bp.load_state(net, states['net']) -> {report}")?;
    std::fs::create_dir_all(out_dir)?;
    let ours = pytree! { "net" => save_state(&net)?, "epoch_i" => epoch, "train_loss" => loss };
    let path = save_pytree(out_dir.join("snn_from_rust.bp"), &ours, true, None, true)?;
    let same = std::fs::read(&path)? == std::fs::read(bp_file)?;
    writeln!(
        out,
        "{} is byte-identical to BrainPy's file: {same}",
        path.display()
    )?;
    Ok(same)
}

fn write(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    // Through save_pytree: the `.bp` name picks BrainPy's format, with a durable atomic save.
    for (name, tree) in [
        ("rust_every_kind.bp", every_kind()),
        ("rust_tutorial.bp", tutorial(false)),
        ("rust_bare_array.bp", bare_array()),
    ] {
        let p = save_pytree(dir.join(name), &tree, true, None, true)?;
        println!("wrote {} ({} bytes)", p.display(), std::fs::metadata(&p)?.len());
    }
    // Chunked as BrainPy writes arrays over its limit (here lowered to 64 bytes).
    let b = bpformat::to_vec_with(&big_array(), &WriteOptions { max_chunk_bytes: 64 })?;
    std::fs::write(dir.join("rust_chunked.bp"), &b)?;
    println!(
        "wrote {} ({} bytes)",
        dir.join("rust_chunked.bp").display(),
        b.len()
    );
    Ok(())
}

/// Compares BrainPy's file with what Rust writes for the same tree, and reads it back.
fn check_one(
    dir: &Path,
    name: &str,
    want: &Pytree,
    opts: &WriteOptions,
) -> Result<bool, Box<dyn std::error::Error>> {
    let path: PathBuf = dir.join(name);
    let theirs = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ours = bpformat::to_vec_with(want, opts)?;
    let read = load_pytree(&path, None, true)?;
    let same_bytes = theirs == ours;
    let same_tree = read == bpformat::decode(&ours)?;
    let rewrite = bpformat::to_vec_with(&read, opts)? == theirs;
    println!(
        "{name}: {} bytes; byte-identical to Rust's encoding: {same_bytes}; read == expected: {same_tree}; \
         rewrite byte-identical: {rewrite}",
        theirs.len()
    );
    Ok(same_bytes && same_tree && rewrite)
}

fn check(dir: &Path) -> Result<bool, Box<dyn std::error::Error>> {
    let d = WriteOptions::default();
    let mut ok = true;
    ok &= check_one(dir, "py_every_kind.bp", &every_kind(), &d)?;
    ok &= check_one(dir, "py_tutorial_fresh.bp", &tutorial(true), &d)?;
    ok &= check_one(dir, "py_tutorial_loaded.bp", &tutorial(false), &d)?;
    ok &= check_one(dir, "py_bare_array.bp", &bare_array(), &d)?;
    ok &= check_one(
        dir,
        "py_chunked.bp",
        &big_array(),
        &WriteOptions { max_chunk_bytes: 64 },
    )?;
    let t = load_pytree(dir.join("py_every_kind.bp"), None, true)?;
    print!("py_every_kind.bp as read in Rust:\n{t}");
    Ok(ok)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => demo(
            &brainpy_tutorial_checkpoint(),
            Path::new("target/brainpy_interop"),
            &mut std::io::stdout(),
        ),
        ["write", dir] => write(Path::new(dir)).map(|()| true),
        ["check", dir] => check(Path::new(dir)),
        ["read", file] => load_pytree(file, None, true)
            .map(|t| print!("{t}"))
            .map(|()| true)
            .map_err(Into::into),
        _ => Err("usage: brainpy_interop [write <dir> | check <dir> | read <file>]".into()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("MISMATCH");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
