//! Training for 10 epochs straight equals training 5, checkpointing (model + optimizer + epoch),
//! loading into a freshly built twin and training 5 more: bit for bit.
use brainstate_core::{variables, Pytree};
use brainstate_nn::*;
use ndarray::Array3;
use rand::{Rng, SeedableRng};

fn data(seed: u64, t: usize, b: usize, n: usize, rate: f64) -> (SpikeInput, Vec<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let x = Array3::from_shape_simple_fn((t, b, n), || if rng.gen_bool(rate) { 1.0f32 } else { 0.0 });
    let y = (0..b)
        .map(|_| if rng.gen_bool(0.5) { 1.0 } else { 0.0 })
        .collect();
    (SpikeInput::new(x).unwrap(), y)
}

fn build(seed: u64, batch: usize) -> (TutorialSnn, Adam) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let net = TutorialSnn::new(
        &SnnConfig::default(),
        Mode::Training { batch_size: batch },
        &mut rng,
    )
    .unwrap();
    let mut opt = Adam::new(4e-3).unwrap();
    opt.register(&net).unwrap();
    (net, opt)
}

fn weights(net: &TutorialSnn) -> Vec<(String, Vec<u32>)> {
    variables(net)
        .unwrap()
        .into_iter()
        .filter(|(_, v)| v.is_trainable())
        .map(|(k, v)| {
            (
                k,
                v.value()
                    .as_slice::<f32>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn ten_epochs_equal_five_plus_checkpoint_plus_five() {
    // A denser input than the tutorial's 10 Hz so that the small network spikes and learns.
    let (x, y) = data(7, 60, 32, 100, 0.05);
    let y = Targets::Classes(&y);
    let mut trainer = Bptt::new(1.0);

    let (mut net, mut opt) = build(42, 32);
    let straight: Vec<f32> = (0..10)
        .map(|_| trainer.train_epoch(&mut net, &mut opt, &x, y).unwrap())
        .collect();
    assert!(
        straight[9] < straight[0],
        "training lowers the loss: {straight:?}"
    );

    let (mut first, mut opt1) = build(42, 32);
    let mut resumed: Vec<f32> = (0..5)
        .map(|_| trainer.train_epoch(&mut first, &mut opt1, &x, y).unwrap())
        .collect();
    let ckpt = checkpoint(
        &first,
        &opt1,
        4,
        [("train_loss".to_string(), Pytree::from(resumed[4]))],
    )
    .unwrap();
    drop((first, opt1));

    // A twin built from another seed: every weight differs until the checkpoint is loaded.
    let (mut twin, mut opt2) = build(1234, 1);
    assert_ne!(weights(&twin), weights(&net));
    let epoch = restore(&mut twin, &mut opt2, &ckpt).unwrap();
    assert_eq!(epoch, 4);
    assert_eq!(opt2.steps(), 5);
    let mut fresh = Bptt::new(1.0);
    resumed.extend((0..5).map(|_| fresh.train_epoch(&mut twin, &mut opt2, &x, y).unwrap()));

    assert_eq!(
        straight.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        resumed.iter().map(|l| l.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(weights(&twin), weights(&net));
    assert_eq!(opt2.steps(), 10);
    for key in ["Dense0.W", "Dense1.b"] {
        assert_eq!(opt.m(key), opt2.m(key));
        assert_eq!(opt.v(key), opt2.v(key));
    }
}

#[test]
fn checkpoint_holds_brainpy_keys() {
    let (net, opt) = build(0, 4);
    let ckpt = checkpoint(&net, &opt, 0, []).unwrap();
    let net_nodes: Vec<String> = ckpt.at("net").unwrap().map().unwrap().keys().cloned().collect();
    assert_eq!(
        net_nodes,
        [
            "SNN0",
            "Lif0",
            "Integrator0",
            "Sequential0",
            "Sequential1",
            "Dense0",
            "Expon0",
            "Dense1",
            "Expon1"
        ]
    );
    let adam: Vec<String> = ckpt
        .at("opt/Adam0")
        .unwrap()
        .map()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        adam,
        [
            "Adam0.step",
            "Adam0.Dense0.W_m",
            "Adam0.Dense0.b_m",
            "Adam0.Dense1.W_m",
            "Adam0.Dense1.b_m",
            "Adam0.Dense0.W_v",
            "Adam0.Dense0.b_v",
            "Adam0.Dense1.W_v",
            "Adam0.Dense1.b_v"
        ]
    );
    let lif: Vec<String> = ckpt
        .at("net/Lif0")
        .unwrap()
        .map()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(lif, ["Lif0.V", "Lif0.spike"]);
    assert_eq!(ckpt.at("epoch_i").unwrap().i64().unwrap(), 0);
}

#[test]
fn sgd_trains_and_saves_its_scheduler() {
    let (x, y) = data(3, 40, 16, 100, 0.05);
    let (mut net, _) = build(5, 16);
    let mut sgd = Sgd::new(0.05).unwrap();
    sgd.register(&net).unwrap();
    let mut trainer = Bptt::new(1.0);
    let before = weights(&net);
    let l0 = trainer
        .train_epoch(&mut net, &mut sgd, &x, Targets::Classes(&y))
        .unwrap();
    assert!(l0.is_finite());
    assert_ne!(weights(&net), before);
    let state = brainstate_core::save_state(&sgd).unwrap();
    assert_eq!(state.keys().collect::<Vec<_>>(), ["SGD0", "Constant0"]);
}
