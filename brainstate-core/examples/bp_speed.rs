//! Throughput of the BrainPy codec, in memory (no disk): `cargo run --release -p brainstate-core
//! --example bp_speed [MiB]`. Cases as in the BrainPy anchor (`bench_ckpt.py`): 10,000 arrays of
//! 100 f32, and one large f32 array (512 MiB by default). Prints the median of 5 runs.

use brainstate_core::{bpformat, Pytree, Tensor};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(name: &str, tree: &Pytree) {
    let mut w = Vec::new();
    let mut r = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        bytes = bpformat::to_vec(tree).expect("write");
        w.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let back = bpformat::decode(&bytes).expect("read");
        r.push(t.elapsed().as_secs_f64());
        assert!(&back == tree);
    }
    let mb = bytes.len() as f64 / 1e6;
    let (w, r) = (median(w), median(r));
    println!(
        "{name}: {mb:.1} MB file; write {:.1} ms = {:.0} MB/s; read {:.1} ms = {:.0} MB/s",
        w * 1e3,
        mb / w,
        r * 1e3,
        mb / r
    );
}

fn main() {
    let big_mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let small: Pytree = (0..10_000)
        .map(|i| {
            (
                format!("a{i}"),
                Tensor::from_vec(&[100], vec![i as f32; 100]).expect("tensor"),
            )
        })
        .collect();
    bench("10,000 arrays of 100 f32", &small);
    let n = big_mib << 18;
    let big = Pytree::map().with("w", Tensor::from_vec(&[n], vec![0.5f32; n]).expect("tensor"));
    bench(&format!("{big_mib} MiB of f32"), &big);
}
