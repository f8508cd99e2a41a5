//! Checkpoint save/load benchmarks.
//!
//! * `cargo bench -p brainstate-core --bench ckpt` — criterion benches (1 MiB, 64 MiB, 10k small).
//! * `CKPT_SIDE_BY_SIDE=1MiB,64MiB,512MiB,10k_small cargo bench -p brainstate-core --bench ckpt` —
//!   the cases of `shared/anchors/bench_ckpt.py` (same tree shapes, same repetitions, median, MB/s
//!   = payload bytes / 1e6 / s), with fsync off (page cache, as the Python harness) and on.
//! * `CKPT_MEM=save|load CKPT_MEM_MIB=512 CKPT_MEM_FILE=path <bench binary>` — one save or load,
//!   printing the peak resident memory (VmHWM) against the payload and file sizes.

use brainstate_core::ckpt::{load_pytree_with, save_pytree_with, LoadOptions, SaveOptions};
use brainstate_core::{Pytree, PytreeMap, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::path::PathBuf;
use std::time::Instant;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn floats(n: usize, seed: u32) -> Tensor {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) - 0.5
        })
        .collect();
    Tensor::from_vec(&[n], v).unwrap()
}

/// The trees of bench_ckpt.py: `{large: {w0..w3}, small: {s000..s099}}` or 100 x 100 arrays.
fn make_case(name: &str) -> Pytree {
    if name == "10k_small" {
        let mut top = PytreeMap::default();
        for g in 0..100 {
            let mut m = PytreeMap::default();
            for i in 0..100 {
                m.insert(format!("a{i:02}"), Pytree::Tensor(floats(100, g * 100 + i)));
            }
            top.insert(format!("g{g:03}"), Pytree::Map(m));
        }
        return Pytree::Map(top);
    }
    let total = match name {
        "1MiB" => MIB,
        "64MiB" => 64 * MIB,
        "512MiB" => 512 * MIB,
        other => panic!("unknown case {other}"),
    };
    let mut small = PytreeMap::default();
    for i in 0..100 {
        small.insert(format!("s{i:03}"), Pytree::Tensor(floats(256, 10_000 + i)));
    }
    let large_bytes = total - 100 * KIB;
    let per = large_bytes / 4 / 4;
    let mut large = PytreeMap::default();
    for i in 0..4 {
        let n = if i < 3 { per } else { large_bytes / 4 - 3 * per };
        let mut t = floats(n, i as u32);
        if n % 1024 == 0 {
            t = t.reshape(&[n / 1024, 1024]).unwrap();
        }
        large.insert(format!("w{i}"), Pytree::Tensor(t));
    }
    let mut top = PytreeMap::default();
    top.insert("large".to_string(), Pytree::Map(large));
    top.insert("small".to_string(), Pytree::Map(small));
    Pytree::Map(top)
}

fn payload_bytes(t: &Pytree) -> usize {
    let mut n = 0;
    t.visit_leaves(&mut |_, l| {
        if let Pytree::Tensor(x) = l {
            n += x.nbytes();
        }
    });
    n
}

fn opts(fsync: bool) -> SaveOptions {
    SaveOptions {
        fsync,
        ..SaveOptions::default()
    }
}

fn bench_dir() -> PathBuf {
    let d = std::env::var_os("CKPT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("bst-ckpt-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn side_by_side(cases: &str) {
    let dir = bench_dir();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load before: {}", loadavg.trim());
    let scale: f64 = std::env::var("CKPT_REPS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let mut summary = Vec::new();
    for case in cases.split(',') {
        let tree = make_case(case);
        let nbytes = payload_bytes(&tree);
        let reps = match case {
            "1MiB" => 15,
            "64MiB" => 5,
            "512MiB" => 3,
            _ => 5,
        };
        let reps = ((reps as f64 * scale).round() as usize).max(1);
        for (label, fsync, parallel) in [
            ("native", false, true),
            ("native_seq", false, false),
            ("native_fsync", true, true),
        ] {
            let path = dir.join(format!("{case}.{label}"));
            let (mut ts, mut tl) = (Vec::new(), Vec::new());
            for r in 0..=reps {
                let _ = std::fs::remove_file(&path);
                let t0 = Instant::now();
                save_pytree_with(&path, &tree, &opts(fsync), None).unwrap();
                let t1 = Instant::now();
                let lo = LoadOptions {
                    parallel,
                    ..LoadOptions::default()
                };
                let back = load_pytree_with(&path, &lo).unwrap();
                let t2 = Instant::now();
                if r == 0 {
                    assert!(back == tree, "round trip differs");
                } else {
                    ts.push((t1 - t0).as_secs_f64());
                    tl.push((t2 - t1).as_secs_f64());
                }
                drop(back);
            }
            let fsize = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::remove_file(&path);
            let mut sorted = tl.clone();
            sorted.sort_by(f64::total_cmp);
            let (lmin, lp25) = (sorted[0], sorted[sorted.len() / 4]);
            let (s, l) = (median(ts), median(tl));
            let (smb, lmb) = (nbytes as f64 / 1e6 / s, nbytes as f64 / 1e6 / l);
            println!(
                "{case:>9} {label:>13}: save {:9.2} ms ({smb:8.1} MB/s)  load {:9.2} ms ({lmb:8.1} MB/s)  file {fsize} B  (load min {:.2} ms, p25 {:.2} ms)",
                s * 1e3,
                l * 1e3,
                lmin * 1e3,
                lp25 * 1e3
            );
            summary.push(format!(
                "\"{case}/{label}\": {{\"save\": {smb:.1}, \"load\": {lmb:.1}}}"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load after: {}", loadavg.trim());
    println!("SUMMARY {{{}}}", summary.join(", "));
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn memory(mode: &str) {
    let mib: usize = std::env::var("CKPT_MEM_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let file = std::env::var_os("CKPT_MEM_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("bst-ckpt-mem.ckpt"));
    let base = vm_hwm_kib();
    match mode {
        "save" => {
            let n = mib * MIB / 4;
            let tree = brainstate_core::pytree! { "w" => floats(n, 1), "b" => floats(1000, 2) };
            let built = vm_hwm_kib();
            save_pytree_with(&file, &tree, &opts(true), None).unwrap();
            let after = vm_hwm_kib();
            let payload = payload_bytes(&tree) as u64;
            println!(
                "save: payload {} MiB; peak RSS {} MiB at start, {} MiB after building the tree, {} MiB after saving: save added {} MiB ({:.3}x payload)",
                payload >> 20,
                base >> 10,
                built >> 10,
                after >> 10,
                (after - built) >> 10,
                (after - built) as f64 * 1024.0 / payload as f64
            );
        }
        "load" => {
            let size = std::fs::metadata(&file)
                .map(|m| m.len())
                .expect("run CKPT_MEM=save first");
            let parallel = std::env::var("CKPT_MEM_PARALLEL").map_or(true, |v| v != "0");
            let lo = LoadOptions {
                parallel,
                ..LoadOptions::default()
            };
            let t = load_pytree_with(&file, &lo).unwrap();
            let after = vm_hwm_kib();
            println!(
                "load (parallel={parallel}): file {} MiB; peak RSS {} MiB at start, {} MiB after loading: {:.3}x file size (peak / file), {:.3}x counting only what load added",
                size >> 20,
                base >> 10,
                after >> 10,
                after as f64 * 1024.0 / size as f64,
                (after - base) as f64 * 1024.0 / size as f64
            );
            drop(t);
        }
        other => panic!("CKPT_MEM must be save or load, not {other}"),
    }
}

fn criterion_benches(c: &mut Criterion) {
    let dir = bench_dir();
    for case in ["1MiB", "10k_small", "64MiB"] {
        let tree = make_case(case);
        let mut g = c.benchmark_group(format!("ckpt_{case}"));
        g.throughput(Throughput::Bytes(payload_bytes(&tree) as u64));
        if case == "64MiB" {
            g.sample_size(10);
        }
        let path = dir.join(case);
        for fsync in [false, true] {
            let id = BenchmarkId::new("save", if fsync { "fsync" } else { "no_fsync" });
            g.bench_function(id, |b| {
                b.iter(|| save_pytree_with(&path, &tree, &opts(fsync), None).unwrap())
            });
        }
        save_pytree_with(&path, &tree, &opts(false), None).unwrap();
        for parallel in [true, false] {
            let lo = LoadOptions {
                parallel,
                ..LoadOptions::default()
            };
            let id = BenchmarkId::new("load", if parallel { "parallel" } else { "sequential" });
            g.bench_function(id, |b| b.iter(|| load_pytree_with(&path, &lo).unwrap()));
        }
        g.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU time of the calling thread, in seconds (steadier than wall time on a busy machine).
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Saves `case` once and loads it `CKPT_PROFILE_N` times (for a profiler).
fn profile_load(case: &str) {
    if std::env::var("CKPT_PROFILE_DECODE_ONLY").is_ok() {
        let dir = bench_dir();
        let path = dir.join(case);
        save_pytree_with(&path, &make_case(case), &opts(false), None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let n: usize = std::env::var("CKPT_PROFILE_N")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(50);
        let mut kept = Vec::with_capacity(n);
        let c0 = thread_cpu_s();
        for _ in 0..n {
            kept.push(brainstate_core::ckpt::native::decode(&bytes).unwrap());
        }
        println!(
            "{case}: {:.2} ms CPU per decode",
            (thread_cpu_s() - c0) * 1e3 / n as f64
        );
        std::mem::forget(kept);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let dir = bench_dir();
    let path = dir.join(case);
    let tree = make_case(case);
    save_pytree_with(&path, &tree, &opts(false), None).unwrap();
    let n: usize = std::env::var("CKPT_PROFILE_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    for parallel in [true, false] {
        let lo = LoadOptions {
            parallel,
            ..LoadOptions::default()
        };
        let mut times = Vec::with_capacity(n);
        let c0 = thread_cpu_s();
        for _ in 0..n {
            let t0 = Instant::now();
            let t = load_pytree_with(&path, &lo).unwrap();
            times.push(t0.elapsed().as_secs_f64());
            drop(t);
        }
        let cpu = (thread_cpu_s() - c0) * 1e3 / n as f64;
        times.sort_by(f64::total_cmp);
        println!(
            "{case}: load (parallel={parallel}) min {:.2} ms, p25 {:.2} ms, median {:.2} ms ({cpu:.2} ms of CPU on this thread per load and drop)",
            times[0] * 1e3,
            times[n / 4] * 1e3,
            times[n / 2] * 1e3
        );
    }
    if std::env::var_os("CKPT_PROFILE_LOAD_ONLY").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let mut f = std::fs::File::open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    let t0 = Instant::now();
    for _ in 0..n {
        brainstate_core::ckpt::native::read_header(&mut f, len).unwrap();
    }
    println!(
        "{case}: {:.2} ms per header parse",
        t0.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    let bytes = std::fs::read(&path).unwrap();
    let mut kept = Vec::with_capacity(n);
    let t0 = Instant::now();
    let c0 = thread_cpu_s();
    for _ in 0..n {
        kept.push(brainstate_core::ckpt::native::decode(&bytes).unwrap());
    }
    println!(
        "{case}: {:.2} ms per decode from memory ({:.2} ms of CPU; results kept, no drop)",
        t0.elapsed().as_secs_f64() * 1e3 / n as f64,
        (thread_cpu_s() - c0) * 1e3 / n as f64
    );
    drop(kept);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    if let Ok(case) = std::env::var("CKPT_PROFILE") {
        return profile_load(&case);
    }
    if let Ok(cases) = std::env::var("CKPT_SIDE_BY_SIDE") {
        return side_by_side(&cases);
    }
    if let Ok(mode) = std::env::var("CKPT_MEM") {
        return memory(&mode);
    }
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c);
    c.final_summary();
}
