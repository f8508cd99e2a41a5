//! Bad input gives a typed error that says where, never a panic.
use brainstate_core::{init_names, Pytree, Stateful};
use brainstate_nn::*;
use ndarray::{Array2, Array3};
use rand::SeedableRng;

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(0)
}

fn net(batch: usize) -> TutorialSnn {
    TutorialSnn::new(
        &SnnConfig::default(),
        Mode::Training { batch_size: batch },
        &mut rng(),
    )
    .unwrap()
}

#[test]
fn layers_that_do_not_fit_are_refused_with_their_position() {
    let m = Mode::training();
    let err = Sequential::new(vec![
        Box::new(Dense::new(100, 10, m, &mut rng()).unwrap()),
        Box::new(Expon::new(12, 8.0, m).unwrap()),
    ])
    .err()
    .unwrap();
    assert_eq!(
        err,
        NnError::LayerShape {
            at: "Sequential, between child 0 and child 1".into(),
            from: "Dense (unnamed)".into(),
            to: "Expon (unnamed)".into(),
            expected: 12,
            found: 10,
        }
    );
    assert!(
        err.to_string()
            .contains("gives 10 features but Expon (unnamed) expects 12"),
        "{err}"
    );
    let chain = Dense::new(3, 4, m, &mut rng()).unwrap().named("inp").unwrap()
        >> Lif::new(4, LifParams::default(), m).unwrap()
        >> Integrator::new(5, 10.0, m).unwrap().named("out").unwrap();
    match chain.build() {
        Err(NnError::LayerShape {
            at,
            to,
            expected: 5,
            found: 4,
            ..
        }) => {
            assert_eq!(at, "Sequential, between child 1 and child 2");
            assert_eq!(to, "out");
        }
        other => panic!("{:?}", other.err()),
    }
    let seq = Sequential::new(vec![Box::new(Expon::new(4, 8.0, m).unwrap())]).unwrap();
    assert!(matches!(
        seq.push(Box::new(Lif::new(5, LifParams::default(), m).unwrap())),
        Err(NnError::LayerShape {
            expected: 5,
            found: 4,
            ..
        })
    ));
    assert!(matches!(Sequential::new(vec![]), Err(NnError::Param { .. })));
}

#[test]
fn batch_size_that_does_not_match_the_state() {
    let mut lif = Lif::new(3, LifParams::default(), Mode::Training { batch_size: 4 }).unwrap();
    let x = vec![0.0f32; 2 * 3];
    let err = lif.step(1.0, Signal::Dense(&x), Record::Off).unwrap_err();
    assert_eq!(
        err,
        NnError::BatchSize {
            layer: "Lif (unnamed)".into(),
            expected: 4,
            found: 2
        }
    );
    init_names(&lif).unwrap();
    let err = lif.step(1.0, Signal::Dense(&x), Record::Off).unwrap_err();
    assert_eq!(
        err,
        NnError::BatchSize {
            layer: "Lif0".into(),
            expected: 4,
            found: 2
        }
    );
    assert!(err.to_string().contains("call reset(2) first"), "{err}");
    lif.reset(2);
    assert!(lif.step(1.0, Signal::Dense(&x), Record::Off).is_ok());

    let mut n = net(8);
    init_names(&n).unwrap();
    let x = vec![0.0f32; 5 * 100];
    match n.step(1.0, Signal::Dense(&x), Record::Off) {
        Err(NnError::BatchSize {
            layer,
            expected: 8,
            found: 5,
        }) => assert_eq!(layer, "Expon0"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn input_of_the_wrong_width() {
    let mut d = Dense::new(4, 2, Mode::training(), &mut rng())
        .unwrap()
        .named("fc")
        .unwrap();
    let x = vec![0.0f32; 7];
    assert_eq!(
        d.step(1.0, Signal::Dense(&x), Record::Off).unwrap_err(),
        NnError::InputShape {
            layer: "fc".into(),
            expected: 4,
            found: 7
        }
    );
    let mut n = net(2);
    let x = SpikeInput::new(Array3::zeros((3, 2, 99))).unwrap();
    match Bptt::new(1.0).loss_and_grad(&mut n, &x, Targets::Classes(&[0.0, 1.0]), Reduction::Mean) {
        Err(NnError::InputShape {
            layer,
            expected: 100,
            found: 99,
        }) => assert_eq!(layer, "SNN0"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn nan_input_is_located() {
    let mut x = Array3::<f32>::zeros((5, 3, 4));
    x[[2, 1, 3]] = f32::NAN;
    match SpikeInput::new(x) {
        Err(NnError::NonFinite { what, index, value }) => {
            assert_eq!(what, "input x");
            assert_eq!(index, [2, 1, 3]);
            assert!(value.is_nan());
        }
        other => panic!("{:?}", other.err()),
    }
    let mut x = Array3::<f32>::zeros((5, 3, 4));
    x[[4, 2, 0]] = f32::INFINITY;
    let err = SpikeInput::new(x).err().unwrap();
    assert_eq!(err.to_string(), "non-finite input inf at input x[4, 2, 0]");
    let logits = Array2::from_shape_vec((1, 2), vec![f32::NAN, 0.0]).unwrap();
    assert!(matches!(
        cross_entropy(logits.view(), Targets::Classes(&[0.0]), Reduction::Mean),
        Err(NnError::NonFinite { .. })
    ));
}

#[test]
fn labels_out_of_range_are_refused_before_training() {
    let mut n = net(3);
    let x = SpikeInput::new(Array3::zeros((4, 3, 100))).unwrap();
    let mut t = Bptt::new(1.0);
    for (labels, sample, label) in [
        ([0.0, 2.0, 1.0], 1, 2.0),
        ([0.5, 0.0, 1.0], 0, 0.5),
        ([0.0, 1.0, -1.0], 2, -1.0),
    ] {
        match t.loss_and_grad(&mut n, &x, Targets::Classes(&labels), Reduction::Mean) {
            Err(NnError::Label {
                sample: s,
                label: l,
                num_classes: 2,
            }) => assert_eq!((s, l), (sample, label)),
            other => panic!("{other:?}"),
        }
    }
    match t.loss_and_grad(&mut n, &x, Targets::Classes(&[0.0, 1.0]), Reduction::Mean) {
        Err(NnError::TargetShape { expected, found, .. }) => {
            assert_eq!((expected, found), (vec![3], vec![2]))
        }
        other => panic!("{other:?}"),
    }
    let p = Array2::<f32>::zeros((3, 3));
    assert!(matches!(
        t.loss_and_grad(&mut n, &x, Targets::Probs(p.view()), Reduction::Mean),
        Err(NnError::TargetShape { .. })
    ));
    let err = NnError::Label {
        sample: 1,
        label: 2.0,
        num_classes: 2,
    };
    assert_eq!(
        err.to_string(),
        "label out of range at sample 1: 2 is not a class index in 0..2"
    );
}

#[test]
fn training_needs_training_mode_and_a_registered_optimizer() {
    let mut n = TutorialSnn::new(
        &SnnConfig::default(),
        Mode::Batching { batch_size: 2 },
        &mut rng(),
    )
    .unwrap();
    let x = SpikeInput::new(Array3::zeros((3, 2, 100))).unwrap();
    match Bptt::new(1.0).loss_and_grad(&mut n, &x, Targets::Classes(&[0.0, 1.0]), Reduction::Mean) {
        Err(NnError::Mode { layer, needed, .. }) => {
            assert_eq!((layer.as_str(), needed.as_str()), ("SNN0", "training"))
        }
        other => panic!("{other:?}"),
    }
    let mut n = net(2);
    let mut opt = Adam::new(1e-3).unwrap();
    match Bptt::new(1.0).train_epoch(&mut n, &mut opt, &x, Targets::Classes(&[0.0, 1.0])) {
        Err(NnError::Optimizer { optimizer, problem }) => {
            assert_eq!(optimizer, "Adam0");
            assert!(problem.contains("Dense0.W"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    let mut lif = Lif::new(2, LifParams::default(), Mode::training()).unwrap();
    assert!(matches!(
        lif.backward(1.0, 0, None, &[0.0, 0.0], true),
        Err(NnError::Mode { .. })
    ));
}

#[test]
fn invalid_parameters() {
    let m = Mode::training();
    assert!(matches!(
        Lif::new(
            3,
            LifParams {
                tau: 0.0,
                ..LifParams::default()
            },
            m
        ),
        Err(NnError::Param { .. })
    ));
    assert!(matches!(
        Lif::new(
            3,
            LifParams {
                v_th: f32::NAN,
                ..LifParams::default()
            },
            m
        ),
        Err(NnError::Param { .. })
    ));
    assert!(matches!(
        Lif::new(0, LifParams::default(), m),
        Err(NnError::Param { .. })
    ));
    assert!(matches!(Expon::new(3, -1.0, m), Err(NnError::Param { .. })));
    assert!(matches!(
        Integrator::new(3, f32::INFINITY, m),
        Err(NnError::Param { .. })
    ));
    assert!(matches!(
        Dense::new(0, 3, m, &mut rng()),
        Err(NnError::Param { .. })
    ));
    assert!(matches!(
        Dense::try_from_arrays(Array2::zeros((2, 3)), Some(ndarray::Array1::zeros(4)), m),
        Err(NnError::Param { .. })
    ));
    assert!(matches!(Adam::new(f32::NAN), Err(NnError::Param { .. })));
    assert!(matches!(Sgd::new(-1.0), Err(NnError::Param { .. })));
    assert!(matches!(
        Expon::new(3, 8.0, m).unwrap().named("my-syn"),
        Err(NnError::Name(_))
    ));
    assert!(matches!(
        Init::Normal { mean: 0.0, std: -1.0 }.sample(&[2], &mut rng()),
        Err(NnError::Param { .. })
    ));
    assert!(matches!(
        Init::Uniform { low: 1.0, high: 1.0 }.sample(&[2], &mut rng()),
        Err(NnError::Param { .. })
    ));
}

#[test]
fn bad_checkpoints_change_nothing() {
    let mut n = net(2);
    let mut opt = Adam::new(1e-3).unwrap();
    opt.register(&n).unwrap();
    let good = checkpoint(&n, &opt, 3, []).unwrap();
    assert!(matches!(
        restore(&mut n, &mut opt, &Pytree::map()),
        Err(NnError::Pytree(_))
    ));
    // A checkpoint of a network of another size: a typed load error naming the variables.
    let mut other = TutorialSnn::new(
        &SnnConfig {
            num_rec: 11,
            ..SnnConfig::default()
        },
        Mode::training(),
        &mut rng(),
    )
    .unwrap();
    let mut other_opt = Adam::new(1e-3).unwrap();
    other_opt.register(&other).unwrap();
    let before = brainstate_core::save_state(&other).unwrap();
    match restore(&mut other, &mut other_opt, &good) {
        Err(NnError::State(e)) => assert!(e.to_string().contains("Dense0.W"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(brainstate_core::save_state(&other).unwrap(), before);
    // The network fits but the optimizer does not (never registered): nothing changes.
    let mut twin = TutorialSnn::new(
        &SnnConfig::default(),
        Mode::training(),
        &mut rand::rngs::StdRng::seed_from_u64(99),
    )
    .unwrap();
    let mut bare = Adam::new(1e-3).unwrap();
    let before = brainstate_core::save_state(&twin).unwrap();
    assert!(matches!(
        restore(&mut twin, &mut bare, &good),
        Err(NnError::State(_))
    ));
    assert_eq!(brainstate_core::save_state(&twin).unwrap(), before);
    assert_eq!(restore(&mut n, &mut opt, &good).unwrap(), 3);
    let _ = n.name();
}

/// A pass-through layer whose step `fail_at` (counted from its last reset) fails.
#[derive(brainstate_derive::Stateful)]
#[stateful(crate = "brainstate_core", type_name = "FailAt")]
struct FailAt {
    #[stateful(name)]
    name: brainstate_core::NodeName,
    size: usize,
    fail_at: usize,
    steps: usize,
    out: Vec<f32>,
}

impl Layer for FailAt {
    fn num_in(&self) -> usize {
        self.size
    }
    fn num_out(&self) -> usize {
        self.size
    }
    fn mode(&self) -> Mode {
        Mode::training()
    }
    fn reset(&mut self, _batch_size: usize) {
        self.steps = 0;
    }
    fn step(&mut self, _dt: f32, input: Signal<'_>, _record: Record) -> Result<&[f32]> {
        self.steps += 1;
        if self.steps - 1 == self.fail_at {
            return Err(NnError::Mode {
                what: format!("step {}", self.fail_at),
                layer: "FailAt".into(),
                needed: "a step that works".into(),
                found: "a planned failure".into(),
            });
        }
        self.out.clear();
        match input {
            Signal::Dense(x) => self.out.extend_from_slice(x),
            Signal::Events(e) => {
                self.out.resize(e.rows() * self.size, 0.0);
                e.densify(&mut self.out);
            }
        }
        Ok(&self.out)
    }
    fn begin_tape(&mut self, _num_steps: usize) {}
    fn begin_backward(&mut self) {}
    fn zero_grad(&mut self) {}
    fn backward(&mut self, _: f32, _: usize, _: Option<Signal<'_>>, d: &[f32], _: bool) -> Result<&[f32]> {
        self.out.clear();
        self.out.extend_from_slice(d);
        Ok(&self.out)
    }
    fn visit_params(&mut self, _f: &mut ParamVisitor<'_>) {}
}

#[test]
fn a_failed_step_drops_the_steps_announced_ahead() {
    // Batch 256: the trainer announces 4 dense steps ahead, and the Dense layer computes them in
    // one product. Step 2 fails (after the Dense layer took its stored output), so step 3's
    // stored output must be dropped: run by hand after the weights change, step 3 takes the new
    // weights.
    let (t, b, n_in, n_out) = (8, 256, 20, 30);
    let dense = Dense::new(n_in, n_out, Mode::Training { batch_size: b }, &mut rng()).unwrap();
    let fail = FailAt {
        name: brainstate_core::NodeName::auto(),
        size: n_out,
        fail_at: 2,
        steps: 0,
        out: Vec::new(),
    };
    let mut net = Sequential::new(vec![Box::new(dense), Box::new(fail)]).unwrap();
    let x = Array3::from_shape_fn((t, b, n_in), |(s, i, j)| {
        0.1 + ((s * 7 + i * 3 + j) % 11) as f32 * 0.05
    });
    let x = SpikeInput::new(x).unwrap();
    let err = Bptt::new(1.0).forward(&mut net, &x, false).unwrap_err();
    assert!(err.to_string().contains("planned failure"), "{err}");

    let mut bias = Vec::new();
    net.visit_params(&mut |_, key, var, _| {
        if key == "W" {
            var.array_mut::<f32>().unwrap().mapv_inplace(|w| 2.0 * w);
        }
        if key == "b" {
            bias = var.value().as_slice::<f32>().unwrap().to_vec();
        }
    });
    let values = x.values();
    let x3 = values.index_axis(ndarray::Axis(0), 3);
    let x3 = x3.as_slice().expect("a step's rows are contiguous");
    let dense = net.children_mut()[0]
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<Dense>())
        .unwrap();
    let (w, bias) = (dense.weight().unwrap().to_owned(), ndarray::Array1::from(bias));
    assert_eq!(bias.len(), n_out);
    let y = dense.step(1.0, Signal::Dense(x3), Record::Off).unwrap().to_vec();
    let mut fresh = Dense::try_from_arrays(w, Some(bias), Mode::Training { batch_size: b }).unwrap();
    let want = fresh.step(1.0, Signal::Dense(x3), Record::Off).unwrap();
    assert!(
        y.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
        "step 3 used the old weights"
    );
}
