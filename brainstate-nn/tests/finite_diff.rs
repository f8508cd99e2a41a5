//! Finite-difference checks of the BPTT gradients where the loss is smooth, and a control that
//! the BrainPy fixture test tells a detached reset apart.
mod common;

use brainstate_core::{variables_mut, StateDict, StateTree, Tensor};
use brainstate_nn::*;
use ndarray::{Array3, Ix3};
use rand::{Rng, SeedableRng};

fn loss_of(model: &mut dyn Layer, x: &SpikeInput, y: &[f32]) -> f64 {
    Bptt::new(1.0)
        .loss_and_grad(model, x, Targets::Classes(y), Reduction::Sum)
        .unwrap() as f64
}

fn perturb(model: &mut dyn Layer, key: &str, i: usize, delta: f32) {
    let mut vars = variables_mut(model).unwrap();
    let (_, v) = vars.iter_mut().find(|(k, _)| k == key).unwrap();
    v.array_mut::<f32>().unwrap().as_slice_mut().unwrap()[i] += delta;
}

/// Central differences (step h) on a sample of entries of every trainable variable.
fn check_fd(model: &mut dyn Layer, x: &SpikeInput, y: &[f32], h: f32, tol: f64) -> usize {
    let mut t = Bptt::new(1.0);
    t.loss_and_grad(model, x, Targets::Classes(y), Reduction::Sum)
        .unwrap();
    let grads = gradients(model).unwrap();
    let mut checked = 0;
    for (key, g) in &grads {
        let g = g.as_slice().unwrap().to_vec();
        let gmax = g.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        assert!(gmax > 0.0, "{key} has a gradient");
        for i in (0..g.len()).step_by(g.len().div_ceil(7)) {
            perturb(model, key, i, h);
            let up = loss_of(model, x, y);
            perturb(model, key, i, -2.0 * h);
            let down = loss_of(model, x, y);
            perturb(model, key, i, h);
            let fd = (up - down) / (2.0 * h as f64);
            let err = (fd - g[i] as f64).abs();
            assert!(
                err <= tol * gmax,
                "{key}[{i}]: fd {fd} vs autodiff {} (max |g| {gmax})",
                g[i]
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn smooth_chain_with_dense_input_matches_finite_differences() {
    let m = Mode::Training { batch_size: 3 };
    let mut r = rand::rngs::StdRng::seed_from_u64(3);
    let mut model = (Dense::new(5, 6, m, &mut r).unwrap()
        >> Expon::new(6, 4.0, m).unwrap()
        >> Dense::with_init(
            6,
            3,
            Init::xavier_normal(1.0),
            Some(Init::Normal { mean: 0.0, std: 0.3 }),
            m,
            &mut r,
        )
        .unwrap()
        >> Integrator::new(3, 5.0, m).unwrap())
    .build()
    .unwrap();
    let x = Array3::from_shape_simple_fn((12, 3, 5), || r.gen_range(-1.0f32..1.0));
    let x = SpikeInput::new(x).unwrap();
    assert!(!x.is_sparse());
    let n = check_fd(&mut model, &x, &[0.0, 2.0, 1.0], 1e-2, 2e-3);
    assert!(n >= 20);
}

#[test]
fn smooth_chain_with_spike_input_matches_finite_differences() {
    let m = Mode::Training { batch_size: 4 };
    let mut r = rand::rngs::StdRng::seed_from_u64(5);
    let mut model = (Dense::new(20, 6, m, &mut r).unwrap()
        >> Expon::new(6, 4.0, m).unwrap()
        >> Integrator::new(6, 3.0, m).unwrap()
        >> Dense::with_init(
            6,
            2,
            Init::xavier_normal(1.0),
            Some(Init::Constant(0.1)),
            m,
            &mut r,
        )
        .unwrap())
    .build()
    .unwrap();
    let x = Array3::from_shape_simple_fn((15, 4, 20), || if r.gen_bool(0.08) { 1.0f32 } else { 0.0 });
    let x = SpikeInput::new(x).unwrap();
    assert!(x.is_sparse());
    check_fd(&mut model, &x, &[0.0, 1.0, 1.0, 0.0], 1e-3, 2e-3);
}

/// The tutorial network's readout (no spike nonlinearity between it and the loss) against
/// finite differences on the BrainPy fixture's data; biases moved off zero so the max over
/// time has no ties (a tie is a kink of the loss).
#[test]
fn tutorial_readout_matches_finite_differences() {
    let mut fx = common::Fixture::open("snn_grad_tutorial");
    let cfg = fx.snn_config();
    let b = fx.cfg_usize("batch_size");
    let mut net = TutorialSnn::new(
        &cfg,
        Mode::Training { batch_size: b },
        &mut rand::rngs::StdRng::seed_from_u64(0),
    )
    .unwrap();
    let mut tree = StateTree::new();
    for node in ["Dense0", "Dense1"] {
        let mut d = StateDict::new();
        d.insert(
            format!("{node}.W"),
            Tensor::from(fx.f32(&format!("init/{node}.W"))),
        );
        tree.insert(node.to_string(), d);
    }
    brainstate_core::load_state(&mut net, &tree).unwrap();
    perturb(&mut net, "Dense1.b", 0, 0.05);
    perturb(&mut net, "Dense1.b", 1, -0.03);
    let x = fx
        .u8("inputs/x")
        .mapv(|v| v as f32)
        .into_dimensionality::<Ix3>()
        .unwrap();
    let x = SpikeInput::new(x).unwrap();
    let y = fx.f32("inputs/y").into_raw_vec_and_offset().0;
    let mut t = Bptt::new(1.0);
    t.loss_and_grad(&mut net, &x, Targets::Classes(&y), Reduction::Sum)
        .unwrap();
    let grads = gradients(&mut net).unwrap();
    for key in ["Dense1.W", "Dense1.b"] {
        let g = grads[key].as_slice().unwrap().to_vec();
        let gmax = g.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        for (i, gi) in g.iter().enumerate() {
            let h = 1e-3;
            perturb(&mut net, key, i, h);
            let up = loss_of(&mut net, &x, &y);
            perturb(&mut net, key, i, -2.0 * h);
            let down = loss_of(&mut net, &x, &y);
            perturb(&mut net, key, i, h);
            let fd = (up - down) / (2.0 * h as f64);
            assert!(
                (fd - *gi as f64).abs() <= 5e-3 * gmax,
                "{key}[{i}]: fd {fd} vs {gi}"
            );
        }
    }
}

/// Control: detaching the spike in the reset term (not what BrainPy does) moves the input
/// gradients far outside the fixture's tolerance, so the agreement test can fail.
#[test]
fn detached_reset_is_detected() {
    let mut fx = common::Fixture::open("snn_grad_tutorial");
    let mut cfg = fx.snn_config();
    cfg.lif.detach_spk = true;
    let b = fx.cfg_usize("batch_size");
    let mut net = TutorialSnn::new(
        &cfg,
        Mode::Training { batch_size: b },
        &mut rand::rngs::StdRng::seed_from_u64(0),
    )
    .unwrap();
    let mut tree = StateTree::new();
    for node in ["Dense0", "Dense1"] {
        let mut d = StateDict::new();
        for v in ["W", "b"] {
            d.insert(
                format!("{node}.{v}"),
                Tensor::from(fx.f32(&format!("init/{node}.{v}"))),
            );
        }
        tree.insert(node.to_string(), d);
    }
    brainstate_core::load_state(&mut net, &tree).unwrap();
    let x = SpikeInput::new(
        fx.u8("inputs/x")
            .mapv(|v| v as f32)
            .into_dimensionality::<Ix3>()
            .unwrap(),
    )
    .unwrap();
    let y = fx.f32("inputs/y").into_raw_vec_and_offset().0;
    Bptt::new(1.0)
        .loss_and_grad(&mut net, &x, Targets::Classes(&y), Reduction::Mean)
        .unwrap();
    let g = gradients(&mut net).unwrap();
    let ours = g["Dense0.W"].as_slice().unwrap().to_vec();
    let want: Vec<f32> = fx.f32("grads/Dense0.W").iter().copied().collect();
    let maxb = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst > 1e-2 * maxb,
        "detached reset should differ: {worst} vs max {maxb}"
    );
}
