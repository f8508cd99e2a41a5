//! Times the tutorial network and the SHD-sized network (700 -> 1000 -> 20) the way
//! `shared/anchors/bench_train.py` times BrainPy: one training epoch (reset, forward over
//! T = 100 steps, BPTT, Adam) and the forward-only simulation, batch 256.
//!
//! ```text
//! MATMUL_NUM_THREADS=1 cargo run --release -p brainstate-nn --example bench_train -- all
//! MATMUL_NUM_THREADS=2 cargo run --release -p brainstate-nn --example bench_train -- all 5
//! cargo run --release -p brainstate-nn --example bench_train -- big-dense 5
//! # the large products through the system OpenBLAS (apt-get install libopenblas-dev):
//! OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 \
//!     cargo run --release -p brainstate-nn --features openblas --example bench_train -- big-dense 5
//! ```
//! Cases: `small` (100 -> 10 -> 2, 10 Hz input at dt = 1 ms), `big-dense` (700 -> 1000 -> 20,
//! dense input: every value nonzero), `big-sparse` (the same network, 1 % input density),
//! `fwd` (forward only, 1 % input), `all`. Each training case prints the first epoch, the median
//! and best of the others, CPU time per epoch and a fingerprint of the final parameters and
//! gradients (equal across runs and thread counts when the arithmetic is). Threads:
//! `BRAINSTATE_NUM_THREADS` (else `MATMUL_NUM_THREADS`; 1 or 2). Prints one `SUMMARY {json}` line
//! at the end.
use brainstate_nn::*;
use ndarray::Array3;
use rand::{Rng, SeedableRng};
use std::time::Instant;

struct Case {
    name: &'static str,
    num_in: usize,
    num_rec: usize,
    num_out: usize,
    density: Option<f64>,
}

fn setup(c: &Case, seed: u64) -> (TutorialSnn, Adam, SpikeInput, Vec<f32>) {
    let (t, b) = (100, 256);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cfg = SnnConfig {
        num_in: c.num_in,
        num_rec: c.num_rec,
        num_out: c.num_out,
        ..SnnConfig::default()
    };
    let net = TutorialSnn::new(&cfg, Mode::Training { batch_size: b }, &mut rng).unwrap();
    let mut opt = Adam::new(4e-3).unwrap();
    opt.register(&net).unwrap();
    let x = match c.density {
        Some(p) => {
            Array3::from_shape_simple_fn((t, b, c.num_in), || if rng.gen_bool(p) { 1.0f32 } else { 0.0 })
        }
        None => Array3::from_shape_simple_fn((t, b, c.num_in), || rng.gen_range(0.01f32..0.2)),
    };
    let y = (0..b)
        .map(|_| if rng.gen_bool(0.5) { 1.0 } else { 0.0 })
        .collect();
    (net, opt, SpikeInput::new(x).unwrap(), y)
}

/// CPU seconds (user + system) this process has used, from /proc (Linux); 0 elsewhere.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// FNV-1a over the bits of every parameter and gradient: equal across runs (and thread counts)
/// when the arithmetic is.
fn fingerprint(net: &mut TutorialSnn) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    net.visit_params(&mut |_, _, var, grad| {
        let vals = var.value().as_slice::<f32>().unwrap_or(&[]);
        for v in vals.iter().chain(grad) {
            h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3);
        }
    });
    h
}

struct Run {
    first: f64,
    steady: f64,
    best: f64,
    loss0: f32,
    loss1: f32,
    cpu: f64,
    fingerprint: u64,
    /// Best sgemm rate (GFLOP/s) of the reference trials run between the epochs.
    sgemm: f64,
}

/// One-thread sgemm rate (GFLOP/s) of a 1024 x 1024 x 1024 product through matrixmultiply, as
/// `shared/anchors/machine_limits.sh` measures it (that script keeps the best of 15 trials).
fn sgemm_1024() -> f64 {
    let n = 1024;
    let (a, b) = (vec![0.5f32; n * n], vec![0.25f32; n * n]);
    let mut c = vec![0f32; n * n];
    let t0 = Instant::now();
    // SAFETY: a, b and c are n x n row-major buffers that live across the call.
    unsafe {
        matrixmultiply::sgemm(
            n,
            n,
            n,
            1.0,
            a.as_ptr(),
            n as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    };
    2.0 * (n as f64).powi(3) / t0.elapsed().as_secs_f64() / 1e9
}

/// Trains `epochs` epochs of case `c`; with `reference`, three sgemm trials run before each
/// epoch (outside its time and CPU count), so the matrix rate can be set against the sgemm rate
/// of the same minutes on this shared machine.
fn train(c: &Case, epochs: usize, reference: bool) -> Run {
    let (mut net, mut opt, x, y) = setup(c, 0);
    let mut trainer = Bptt::new(1.0);
    let mut times = Vec::new();
    let mut losses = Vec::new();
    let mut cpu0 = 0.0;
    let mut cpu_ref = 0.0;
    let mut sgemm = 0.0f64;
    for e in 0..epochs {
        if reference {
            let c0 = cpu_s();
            sgemm = (0..3).map(|_| sgemm_1024()).fold(sgemm, f64::max);
            cpu_ref += cpu_s() - c0;
        }
        if e == 1 {
            cpu0 = cpu_s();
            cpu_ref = 0.0;
        }
        let t0 = Instant::now();
        let l = trainer
            .train_epoch(&mut net, &mut opt, &x, Targets::Classes(&y))
            .unwrap();
        times.push(t0.elapsed().as_secs_f64());
        losses.push(l);
    }
    let cpu = (cpu_s() - cpu0 - cpu_ref) / (epochs - 1) as f64;
    Run {
        first: times[0],
        steady: median(times[1..].to_vec()),
        best: times[1..].iter().copied().fold(f64::INFINITY, f64::min),
        loss0: losses[0],
        loss1: *losses.last().unwrap(),
        cpu,
        fingerprint: fingerprint(&mut net),
        sgemm,
    }
}

fn forward(c: &Case, reps: usize) -> (f64, f64, f64) {
    let (mut net, _, x, _) = setup(c, 0);
    let mut trainer = Bptt::new(1.0);
    trainer.forward(&mut net, &x, false).unwrap();
    let cpu0 = cpu_s();
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            trainer.forward(&mut net, &x, false).unwrap();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    (median(times), (cpu_s() - cpu0) / reps as f64, best)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("all");
    let epochs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(6);
    let var = if MATMUL_BACKEND == "openblas" {
        "OPENBLAS_NUM_THREADS"
    } else {
        "MATMUL_NUM_THREADS"
    };
    let threads = std::env::var(var).unwrap_or_else(|_| "default".into());
    let small = Case {
        name: "small",
        num_in: 100,
        num_rec: 10,
        num_out: 2,
        density: Some(0.01),
    };
    let dense = Case {
        name: "big-dense",
        num_in: 700,
        num_rec: 1000,
        num_out: 20,
        density: None,
    };
    let sparse = Case {
        name: "big-sparse",
        num_in: 700,
        num_rec: 1000,
        num_out: 20,
        density: Some(0.01),
    };
    let mut summary = vec![
        format!("\"matmul_backend\": \"{MATMUL_BACKEND}\""),
        format!("\"matmul_threads\": \"{threads}\""),
        format!("\"threads\": {}", par::num_threads()),
    ];
    if let Some(core) = openblas_core() {
        if core.eq_ignore_ascii_case("prescott") {
            eprintln!("warning: OpenBLAS did not recognise this CPU and runs generic kernels; set OPENBLAS_CORETYPE (e.g. SkylakeX or Haswell)");
        }
        summary.push(format!("\"openblas_core\": \"{core}\""));
    }
    for c in [&small, &dense, &sparse] {
        if which != "all" && which != c.name {
            continue;
        }
        let e = if c.name == "small" { epochs.max(20) } else { epochs };
        let Run {
            first,
            steady,
            best,
            loss0: l0,
            loss1: l1,
            cpu,
            fingerprint: fp,
            sgemm,
        } = train(c, e, c.name == "big-dense");
        println!(
            "[{}] epochs {e}: first {first:.4} s, steady median {steady:.5} s, best {best:.5} s (CPU {cpu:.5} s \
             per epoch); loss {l0:.4} -> {l1:.4}; parameters {fp:016x}",
            c.name
        );
        let mut entry = format!(
            "\"{}\": {{\"epoch_s\": {steady:.6}, \"best_epoch_s\": {best:.6}, \"cpu_s_per_epoch\": {cpu:.5}, \
             \"first_epoch_s\": {first:.5}",
            c.name
        );
        if c.name != "small" {
            // Matrix work per epoch: input layer forward + weight gradient (dense path), readout
            // forward, its weight gradient and its input gradient.
            let (t, b) = (100.0, 256.0);
            let (ni, nr, no) = (c.num_in as f64, c.num_rec as f64, c.num_out as f64);
            let flops = 2.0 * t * b * (2.0 * ni * nr + 3.0 * nr * no);
            entry += &format!(
                ", \"matrix_gflop\": {:.2}, \"gflops\": {:.1}",
                flops / 1e9,
                flops / steady / 1e9
            );
            if sgemm > 0.0 {
                // The rate over the matrix work, median and best epoch, against the best
                // reference sgemm trial of the same run.
                let (med, top) = (flops / steady / 1e9, flops / best / 1e9);
                println!(
                    "[{}] matrix work {med:.1} GFLOP/s (best epoch {top:.1}); sgemm 1024 best of {} trials in \
                     the same run {sgemm:.1} GFLOP/s: {:.0}% (best epoch {:.0}%)",
                    c.name,
                    3 * e,
                    100.0 * med / sgemm,
                    100.0 * top / sgemm
                );
                entry += &format!(
                    ", \"sgemm1024_gflops\": {sgemm:.1}, \"matrix_vs_sgemm\": {:.3}, \"matrix_vs_sgemm_best\": {:.3}",
                    med / sgemm,
                    top / sgemm
                );
            }
        }
        summary.push(entry + "}");
    }
    if which == "all" || which == "fwd" {
        let (s, cpu, best) = forward(&sparse, 10);
        println!(
            "[fwd] 700->1000->20, batch 256, 1% input: {s:.5} s per 100 steps (best {best:.5} s, CPU {cpu:.5} s), \
             {:.0} steps/s",
            100.0 / s
        );
        summary.push(format!(
            "\"fwd\": {{\"s_per_100_steps\": {s:.6}, \"best_s_per_100_steps\": {best:.6}, \
             \"cpu_s_per_100_steps\": {cpu:.5}, \"steps_per_s\": {:.1}}}",
            100.0 / s
        ));
    }
    println!("SUMMARY {{{}}}", summary.join(", "));
}
