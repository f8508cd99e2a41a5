//! Agreement with BrainPy 2.8.2's own forward pass, gradients and first Adam step
//! (`tests/fixtures/snn_grad_*.{npz,json}`, copied from shared/fixtures/brainpy_grad), within the
//! tolerances each fixture's JSON states.
mod common;

use brainstate_core::{load_state, save_state, StateDict, StateTree, Stateful, Tensor};
use brainstate_nn::*;
use common::*;
use ndarray::{Array3, ArrayD, Ix3};
use rand::SeedableRng;

struct Run {
    fx: Fixture,
    net: TutorialSnn,
    x: SpikeInput,
    y: Vec<f32>,
}

fn setup(name: &str) -> Run {
    let mut fx = Fixture::open(name);
    let cfg = fx.snn_config();
    let batch = fx.cfg_usize("batch_size");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut net = TutorialSnn::new(&cfg, Mode::Training { batch_size: batch }, &mut rng).unwrap();
    // Load BrainPy's initial weights through the global state keys.
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
    let r = load_state(&mut net, &tree).unwrap();
    assert!(r.unexpected_keys.is_empty(), "{r}");
    let x = fx
        .u8("inputs/x")
        .mapv(|v| v as f32)
        .into_dimensionality::<Ix3>()
        .unwrap();
    let y = fx.f32("inputs/y").into_raw_vec_and_offset().0;
    Run {
        fx,
        net,
        x: SpikeInput::new(x).unwrap(),
        y,
    }
}

fn flat(a: &ArrayD<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

fn check_forward(name: &str) {
    let Run {
        mut fx, mut net, x, ..
    } = setup(name);
    let dt = fx.cfg_f32("dt");
    let (t_len, b, _) = x.values().dim();
    let (nr, no) = (net.r.num_out(), net.o.num_out());
    let mut v = Array3::<f32>::zeros((t_len, b, nr));
    let mut spikes = Array3::<f32>::zeros((t_len, b, nr));
    let mut outs = Array3::<f32>::zeros((t_len, b, no));
    net.reset(b);
    for t in 0..t_len {
        let o = net.step(dt, x.signal(t), Record::Off).unwrap().to_vec();
        outs.index_axis_mut(ndarray::Axis(0), t)
            .as_slice_mut()
            .unwrap()
            .copy_from_slice(&o);
        v.index_axis_mut(ndarray::Axis(0), t)
            .as_slice_mut()
            .unwrap()
            .copy_from_slice(net.r.v().value().as_slice::<f32>().unwrap());
        spikes
            .index_axis_mut(ndarray::Axis(0), t)
            .as_slice_mut()
            .unwrap()
            .copy_from_slice(net.r.spike().value().as_slice::<f32>().unwrap());
    }
    let want_spikes = fx.u8("forward/spikes");
    let mism = spikes
        .iter()
        .zip(want_spikes.iter())
        .filter(|(a, b)| **a != **b as f32)
        .count();
    assert_eq!(mism, 0, "{name}: spikes differ in {mism} places");
    assert!(want_spikes.iter().any(|s| *s == 1), "fixture has spikes");
    assert_close(
        &format!("{name} V"),
        v.as_slice().unwrap(),
        &flat(&fx.f32("forward/V")),
        5e-6,
        1e-5,
    );
    assert_close(
        &format!("{name} outs"),
        outs.as_slice().unwrap(),
        &flat(&fx.f32("forward/outs")),
        5e-6,
        1e-5,
    );
    // The state left after the forward pass, by BrainPy's keys.
    let state = save_state(&net).unwrap();
    for (node, key) in [
        ("Lif0", "Lif0.V"),
        ("Lif0", "Lif0.spike"),
        ("Integrator0", "Integrator0.x"),
        ("Expon0", "Expon0.g"),
        ("Expon1", "Expon1.g"),
    ] {
        let ours = state[node][key].as_slice::<f32>().unwrap().to_vec();
        assert_close(
            &format!("{name} state {key}"),
            &ours,
            &flat(&fx.f32(&format!("state/{node}/{key}"))),
            5e-6,
            1e-5,
        );
    }
    let nodes: Vec<&str> = state.keys().map(|s| s.as_str()).collect();
    // BrainPy's traversal order (the JSON object is read unordered).
    let want = [
        "SNN0",
        "Lif0",
        "Integrator0",
        "Sequential0",
        "Sequential1",
        "Dense0",
        "Expon0",
        "Dense1",
        "Expon1",
    ];
    assert_eq!(nodes, want);
    assert_eq!(fx.json["state_nodes"].as_object().unwrap().len(), want.len());
    for (node, keys) in fx.json["state_nodes"].as_object().unwrap() {
        let ours: Vec<&str> = state[node.as_str()].keys().map(|s| s.as_str()).collect();
        let theirs: Vec<&str> = keys
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(ours, theirs, "{name}: keys of {node}");
    }
}

fn check_grads_and_adam(name: &str) {
    let Run {
        mut fx,
        mut net,
        x,
        y,
    } = setup(name);
    let mut trainer = Bptt::new(fx.cfg_f32("dt"));
    let mut opt = Adam::new(fx.cfg_f32("lr")).unwrap();
    opt.register(&net).unwrap();
    let loss = trainer
        .loss_and_grad(&mut net, &x, Targets::Classes(&y), Reduction::Mean)
        .unwrap();
    let want_loss = fx.f32("forward/loss").iter().copied().next().unwrap();
    assert!(
        (loss - want_loss).abs() <= 1e-6,
        "{name}: loss {loss} vs {want_loss}"
    );
    assert_close(
        &format!("{name} logits"),
        trainer.logits().as_slice().unwrap(),
        &flat(&fx.f32("forward/logits")),
        5e-6,
        1e-5,
    );
    assert_close(
        &format!("{name} outs (trainer)"),
        trainer.outputs().as_slice().unwrap(),
        &flat(&fx.f32("forward/outs")),
        5e-6,
        1e-5,
    );
    let grads = gradients(&mut net).unwrap();
    assert_eq!(
        grads.keys().collect::<Vec<_>>(),
        ["Dense0.W", "Dense0.b", "Dense1.W", "Dense1.b"]
    );
    for (key, g) in &grads {
        let want = flat(&fx.f32(&format!("grads/{key}")));
        let ours = flat(g);
        assert_normwise(&format!("{name} grad {key}"), &ours, &want, 1e-4);
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            if *b == 0.0 {
                assert_eq!(*a, 0.0, "{name} grad {key}[{i}] must be exactly 0");
            }
        }
    }
    let before: Vec<(String, Vec<f32>)> = brainstate_core::variables(&net)
        .unwrap()
        .into_iter()
        .filter(|(_, v)| v.is_trainable())
        .map(|(k, v)| (k, v.value().as_slice::<f32>().unwrap().to_vec()))
        .collect();
    opt.update(&mut net).unwrap();
    assert_eq!(opt.steps(), 1);
    assert_eq!(fx.i32("adam/step").iter().copied().next(), Some(1));
    let after = brainstate_core::variables(&net).unwrap();
    for (key, init) in &before {
        let m = flat(&opt.m(key).unwrap());
        let v = flat(&opt.v(key).unwrap());
        assert_normwise(
            &format!("{name} adam m {key}"),
            &m,
            &flat(&fx.f32(&format!("adam/m/{key}"))),
            1e-4,
        );
        assert_normwise(
            &format!("{name} adam v {key}"),
            &v,
            &flat(&fx.f32(&format!("adam/v/{key}"))),
            2e-4,
        );
        let p = after
            .iter()
            .find(|(k, _)| k == key)
            .unwrap()
            .1
            .value()
            .as_slice::<f32>()
            .unwrap();
        let want = flat(&fx.f32(&format!("after_adam/{key}")));
        let g = flat(&fx.f32(&format!("grads/{key}")));
        for i in 0..p.len() {
            let tol = if g[i] == 0.0 {
                0.0
            } else if g[i].abs() >= 1e-5 {
                1e-6
            } else {
                2e-5
            };
            assert!(
                (p[i] - want[i]).abs() <= tol,
                "{name} after_adam {key}[{i}]: {} vs {} (grad {})",
                p[i],
                want[i],
                g[i]
            );
            if g[i] == 0.0 {
                assert_eq!(p[i], init[i]);
            }
        }
    }
    // The optimizer's state keys are BrainPy 2.8's.
    let ostate = save_state(&opt).unwrap();
    let keys: Vec<&String> = ostate["Adam0"].keys().collect();
    assert_eq!(keys[0], "Adam0.step");
    assert!(ostate["Adam0"].contains_key("Adam0.Dense0.W_m"));
    assert!(ostate["Adam0"].contains_key("Adam0.Dense1.b_v"));
    assert_eq!(
        ostate["Constant0"].keys().collect::<Vec<_>>(),
        ["Constant0.last_epoch"]
    );
    let _ = opt.name();
}

#[test]
fn tutorial_forward_matches_brainpy() {
    check_forward("snn_grad_tutorial");
}

#[test]
fn arctan_hard_forward_matches_brainpy() {
    check_forward("snn_grad_arctan_hard");
}

#[test]
fn tutorial_grads_and_adam_match_brainpy() {
    check_grads_and_adam("snn_grad_tutorial");
}

#[test]
fn arctan_hard_grads_and_adam_match_brainpy() {
    check_grads_and_adam("snn_grad_arctan_hard");
}
