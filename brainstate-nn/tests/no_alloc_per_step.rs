//! No allocation per time step: once warmed up, a training epoch allocates the same number of
//! times whether it runs 20 or 60 steps (counted with a counting global allocator). With dense
//! input the matrix product (the `gemm` crate) allocates its packing buffers (two) once per call:
//! that is the only per-step allocation. At 50 % input here the input layer's product runs once
//! per 8 steps forward (announced ahead) and its weight gradient once per step.
use brainstate_nn::*;
use ndarray::Array3;
use rand::{Rng, SeedableRng};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is global: the tests take turns so one does not count the other's allocations.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn input(t: usize, rate: f64, seed: u64) -> SpikeInput {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    SpikeInput::new(Array3::from_shape_simple_fn((t, 16, 100), || {
        if rng.gen_bool(rate) {
            1.0f32
        } else {
            0.0
        }
    }))
    .unwrap()
}

#[test]
fn epoch_allocations_do_not_grow_with_time_steps() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for rate in [0.02, 0.5] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut net =
            TutorialSnn::new(&SnnConfig::default(), Mode::Training { batch_size: 16 }, &mut rng).unwrap();
        let mut opt = Adam::new(1e-3).unwrap();
        opt.register(&net).unwrap();
        let y: Vec<f32> = (0..16).map(|i| (i % 2) as f32).collect();
        let (short, long) = (input(20, rate, 2), input(60, rate, 3));
        let mut trainer = Bptt::new(1.0);
        // Warm up on the longer sequence so every buffer has its final capacity.
        for _ in 0..2 {
            trainer
                .train_epoch(&mut net, &mut opt, &long, Targets::Classes(&y))
                .unwrap();
        }
        let count = |x: &SpikeInput, net: &mut TutorialSnn, opt: &mut Adam, trainer: &mut Bptt| {
            let before = ALLOCS.load(Ordering::Relaxed);
            trainer.train_epoch(net, opt, x, Targets::Classes(&y)).unwrap();
            ALLOCS.load(Ordering::Relaxed) - before
        };
        let a = count(&short, &mut net, &mut opt, &mut trainer);
        let b = count(&long, &mut net, &mut opt, &mut trainer);
        if rate < 0.1 {
            assert_eq!(a, b, "rate {rate}: {a} allocations for 20 steps, {b} for 60");
            assert!(b < 100, "a handful per epoch, not per step: {b}");
        } else {
            // 40 more steps: 45 product calls of two buffers each.
            assert!(
                b - a <= 2 * 45,
                "rate {rate}: only the products' packing buffers: {a} vs {b}"
            );
        }
    }
}

#[test]
fn split_work_of_a_large_network_allocates_nothing_per_step() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Large enough that the layer loops, event scans and products are split across the two
    // threads (state of 128 x 512 values); sparse input, as the SHD-sized benchmark's 1 % case.
    let (b, n_in) = (128, 300);
    let cfg = SnnConfig {
        num_in: n_in,
        num_rec: 512,
        num_out: 4,
        ..SnnConfig::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut net = TutorialSnn::new(&cfg, Mode::Training { batch_size: b }, &mut rng).unwrap();
    let mut opt = Adam::new(1e-3).unwrap();
    opt.register(&net).unwrap();
    let y: Vec<f32> = (0..b).map(|i| (i % 4) as f32).collect();
    let spikes = |t: usize, seed: u64| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        SpikeInput::new(Array3::from_shape_simple_fn((t, b, n_in), || {
            if rng.gen_bool(0.01) {
                1.0f32
            } else {
                0.0
            }
        }))
        .unwrap()
    };
    let (short, long) = (spikes(10, 5), spikes(30, 6));
    let mut trainer = Bptt::new(1.0);
    for _ in 0..2 {
        trainer
            .train_epoch(&mut net, &mut opt, &long, Targets::Classes(&y))
            .unwrap();
    }
    let mut count = |x: &SpikeInput| {
        let before = ALLOCS.load(Ordering::Relaxed);
        trainer
            .train_epoch(&mut net, &mut opt, x, Targets::Classes(&y))
            .unwrap();
        ALLOCS.load(Ordering::Relaxed) - before
    };
    let (a, b) = (count(&short), count(&long));
    assert_eq!(a, b, "{a} allocations for 10 steps, {b} for 30");
}
