//! Layers, modes, initializers, surrogates and the loss against the spec's verified values.
use brainstate_core::{save_state, Stateful};
use brainstate_nn::*;
use ndarray::{array, Array2};
use rand::SeedableRng;

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(11)
}

fn v_of(lif: &Lif) -> Vec<f32> {
    lif.v().value().as_slice::<f32>().unwrap().to_vec()
}

#[test]
fn lif_matches_brainpy_verified_values() {
    // Lif(1, V_rest=0, V_reset=0, V_th=1, tau=2), dt 0.1, I = 1 for 3 steps: V = 1 - e^{-0.15}.
    let p = LifParams {
        v_rest: 0.0,
        v_reset: 0.0,
        v_th: 1.0,
        tau: 2.0,
        ..LifParams::default()
    };
    let mut lif = Lif::new(1, p, Mode::NonBatching).unwrap();
    for _ in 0..3 {
        lif.step(0.1, Signal::Dense(&[1.0]), Record::Off).unwrap();
    }
    assert!((v_of(&lif)[0] - 0.139_292).abs() < 1e-6, "{:?}", v_of(&lif));
    // Training-mode soft reset with V_reset = -1 subtracts V_th - V_reset = 2.
    let p = LifParams {
        v_rest: 0.0,
        v_reset: -1.0,
        v_th: 1.0,
        tau: 2.0,
        ..LifParams::default()
    };
    let mut lif = Lif::new(1, p, Mode::training()).unwrap();
    lif.step(1.0, Signal::Dense(&[10.0]), Record::Off).unwrap();
    let v_int = 10.0 * (1.0 - (-0.5f32).exp());
    assert!((v_of(&lif)[0] - (v_int - 2.0)).abs() < 1e-5);
    assert_eq!(lif.spike().value().as_slice::<f32>().unwrap(), &[1.0]);
    // Hard reset (and outside training: always hard to V_reset, bool spikes).
    let mut hard = Lif::new(
        1,
        LifParams {
            spk_reset: SpikeReset::Hard,
            ..p
        },
        Mode::training(),
    )
    .unwrap();
    hard.step(1.0, Signal::Dense(&[10.0]), Record::Off).unwrap();
    assert_eq!(v_of(&hard), [-1.0]);
    let mut plain = Lif::new(1, p, Mode::NonBatching).unwrap();
    plain.step(1.0, Signal::Dense(&[10.0]), Record::Off).unwrap();
    assert_eq!(v_of(&plain), [-1.0]);
    assert_eq!(plain.spike().value().as_slice::<bool>().unwrap(), &[true]);
    // Below threshold: no spike and no reset.
    plain.step(1.0, Signal::Dense(&[0.0]), Record::Off).unwrap();
    assert_eq!(plain.spike().value().as_slice::<bool>().unwrap(), &[false]);
}

#[test]
fn expon_and_integrator_follow_exponential_euler() {
    let mut e = Expon::new(1, 8.0, Mode::NonBatching).unwrap();
    assert_eq!(e.step(0.1, Signal::Dense(&[1.0]), Record::Off).unwrap(), &[1.0]);
    let g = e.step(0.1, Signal::Dense(&[0.0]), Record::Off).unwrap()[0];
    assert!((g - 0.98758).abs() < 1e-5, "{g}");
    let mut i = Integrator::new(1, 10.0, Mode::NonBatching).unwrap();
    let x = i.step(1.0, Signal::Dense(&[2.0]), Record::Off).unwrap()[0];
    assert!((x - 2.0 * (1.0 - (-0.1f32).exp())).abs() < 1e-6);
}

#[test]
fn modes_decide_state_shapes_dtypes_and_what_is_saved() {
    let mut r = rng();
    let net = TutorialSnn::new(&SnnConfig::default(), Mode::NonBatching, &mut r).unwrap();
    let s = save_state(&net).unwrap();
    assert_eq!(
        s["Dense0"].len(),
        0,
        "non-training Dense saves nothing, as BrainPy"
    );
    assert_eq!(
        s["Lif0"].to_string(),
        "{'Lif0.V': f32[10], 'Lif0.spike': bool[10]}"
    );
    let net = TutorialSnn::new(&SnnConfig::default(), Mode::Batching { batch_size: 3 }, &mut r).unwrap();
    let s = save_state(&net).unwrap();
    assert_eq!(
        s["Lif0"].to_string(),
        "{'Lif0.V': f32[3, 10], 'Lif0.spike': bool[3, 10]}"
    );
    let mut net = TutorialSnn::new(&SnnConfig::default(), Mode::training(), &mut r).unwrap();
    let s = save_state(&net).unwrap();
    assert_eq!(
        s["Lif0"].to_string(),
        "{'Lif0.V': f32[1, 10], 'Lif0.spike': f32[1, 10]}"
    );
    assert_eq!(
        s["Dense0"].to_string(),
        "{'Dense0.W': f32[100, 10], 'Dense0.b': f32[10]}"
    );
    assert_eq!(net.r.v().batch_axis(), Some(0));
    net.reset(7);
    let s = save_state(&net).unwrap();
    assert_eq!(s["Expon1"].to_string(), "{'Expon1.g': f32[7, 2]}");
    assert_eq!(net.mode(), Mode::Training { batch_size: 7 });
}

#[test]
fn dense_without_bias_and_initializers() {
    let mut r = rng();
    let d = Dense::with_init(
        100,
        10,
        Init::kaiming_normal(20.0),
        None,
        Mode::training(),
        &mut r,
    )
    .unwrap();
    assert!(!d.has_bias());
    assert_eq!(d.save_state().keys().collect::<Vec<_>>(), ["Dense0.W"]);
    let w = d.weight().unwrap();
    let n = w.len() as f32;
    let mean = w.sum() / n;
    let std = (w.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
    // KaimingNormal(scale=20) on (100, 10): std sqrt(20/100) = 0.447, |w| <= 2*0.447/0.8796 = 1.017.
    assert!((std - 0.447).abs() < 0.03, "std {std}");
    assert!(
        w.iter().all(|x| x.abs() <= 1.0168),
        "truncated at 2 sigma of the untruncated normal"
    );
    assert!((Init::kaiming_normal(20.0).std_for(&[100, 10]).unwrap() - 0.2f64.sqrt()).abs() < 1e-12);
    assert!((Init::xavier_normal(1.0).std_for(&[100, 10]).unwrap() - (1.0f64 / 55.0).sqrt()).abs() < 1e-12);
    assert!((Init::lecun_uniform(1.0).std_for(&[4, 3, 5]).unwrap() - (1.0f64 / 12.0).sqrt()).abs() < 1e-12);
    assert_eq!(Init::fans(&[7]), (7.0, 7.0));
    assert_eq!(Init::fans(&[]), (1.0, 1.0));
    let u = Init::kaiming_uniform(2.0).sample(&[50, 20], &mut r).unwrap();
    let bound = (3.0f32 * 2.0 / 50.0).sqrt();
    assert!(u.iter().all(|x| x.abs() <= bound) && u.iter().any(|x| x.abs() > 0.9 * bound));
    for init in [
        Init::xavier_uniform(1.0),
        Init::lecun_normal(1.0),
        Init::VarianceScaling {
            scale: 1.0,
            mode: FanMode::FanOut,
            distribution: Distr::Normal,
        },
    ] {
        let a = init.sample(&[30, 40], &mut r).unwrap();
        assert!(a.iter().any(|x| *x != 0.0));
    }
    assert!(Init::Zeros
        .sample(&[3], &mut r)
        .unwrap()
        .iter()
        .all(|x| *x == 0.0));
    assert!(Init::Constant(0.5)
        .sample(&[3], &mut r)
        .unwrap()
        .iter()
        .all(|x| *x == 0.5));
    // Seeded: the same seed gives the same weights.
    let a = Dense::new(5, 3, Mode::training(), &mut rand::rngs::StdRng::seed_from_u64(9)).unwrap();
    let b = Dense::new(5, 3, Mode::training(), &mut rand::rngs::StdRng::seed_from_u64(9)).unwrap();
    assert_eq!(a.weight().unwrap(), b.weight().unwrap());
}

#[test]
fn dense_event_path_equals_matrix_path() {
    let mut r = rng();
    let w = Init::Normal { mean: 0.0, std: 1.0 }
        .sample(&[6, 4], &mut r)
        .unwrap()
        .into_dimensionality()
        .unwrap();
    let b = ndarray::Array1::from(vec![0.5f32, -1.0, 0.0, 2.0]);
    let mut d = Dense::try_from_arrays(w, Some(b), Mode::NonBatching).unwrap();
    let sparse = [0.0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.5];
    let dense: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    for x in [&sparse[..], &dense[..]] {
        let got = d.step(1.0, Signal::Dense(x), Record::Off).unwrap().to_vec();
        let xv = Array2::from_shape_vec((2, 6), x.to_vec()).unwrap();
        let want = xv.dot(&d.weight().unwrap()) + &array![0.5f32, -1.0, 0.0, 2.0];
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want}");
        }
    }
}

#[test]
fn surrogates_have_heaviside_forward_and_their_derivatives() {
    assert_eq!([-1.0, 0.0, 0.5].map(Surrogate::forward), [0.0, 1.0, 1.0]);
    let a = Surrogate::arctan();
    let g = [-1.0, 0.0, 0.5].map(|x| a.grad(x));
    for (g, want) in g.iter().zip([0.14420, 0.5, 0.30924]) {
        assert!((g - want).abs() < 1e-5, "{g} vs {want}");
    }
    let all = Surrogate::all_defaults();
    assert_eq!(all.len(), 14);
    assert_eq!(
        LifParams::default().surrogate,
        Surrogate::InvSquareGrad { alpha: 100.0 }
    );
    // Derivative of the primitive, numerically, where the primitive is simple.
    for (name, s) in &all {
        let Some(_) = s.primitive(0.3) else { continue };
        for x in [-1.3f64, -0.4, -0.05, 0.07, 0.35, 1.1] {
            let h = 1e-5;
            let fd = (s.primitive(x + h).unwrap() - s.primitive(x - h).unwrap()) / (2.0 * h);
            let g = s.grad(x as f32) as f64;
            assert!(
                (fd - g).abs() <= 1e-4 * (1.0 + g.abs()),
                "{name} at {x}: fd {fd} vs {g}"
            );
        }
    }
    // Closed forms of the others at a few points.
    let at = |s: Surrogate, x: f32| s.grad(x);
    assert!((at(Surrogate::erf(), 0.0) - 1.0 / std::f32::consts::PI.sqrt()).abs() < 1e-6);
    assert_eq!(at(Surrogate::relu_grad(), 0.5), 0.3 - 0.15);
    assert_eq!(at(Surrogate::relu_grad(), 2.0), 0.0);
    assert_eq!(at(Surrogate::leaky_relu(), -0.1), 0.1);
    assert_eq!(at(Surrogate::leaky_relu(), 0.0), 1.0);
    assert_eq!(at(Surrogate::piecewise_quadratic(), 0.5), 0.5);
    assert_eq!(at(Surrogate::piecewise_quadratic(), 1.5), 0.0);
    assert_eq!(at(Surrogate::piecewise_leaky_relu(), 0.5), 0.5);
    assert_eq!(at(Surrogate::piecewise_leaky_relu(), 1.5), 0.01);
    let gg = at(Surrogate::gaussian_grad(), 0.0);
    assert!((gg - 0.5 / ((2.0 * std::f32::consts::PI).sqrt() * 0.5)).abs() < 1e-6);
    assert!((at(Surrogate::sigmoid(), 0.0) - 1.0).abs() < 1e-6);
}

#[test]
fn cross_entropy_matches_brainpy() {
    let logits = array![[1.0f32, 2.0], [0.5, 0.1]];
    let labels = [1.0f32, 0.0];
    let mean = cross_entropy(logits.view(), Targets::Classes(&labels), Reduction::Mean).unwrap();
    let sum = cross_entropy(logits.view(), Targets::Classes(&labels), Reduction::Sum).unwrap();
    let Loss::Scalar(mean) = mean else { panic!() };
    let Loss::Scalar(sum) = sum else { panic!() };
    assert!((mean - 0.413_138).abs() < 1e-6 && (sum - 0.826_277).abs() < 1e-6);
    let onehot = array![[0.0f32, 1.0], [1.0, 0.0]];
    let per = cross_entropy(logits.view(), Targets::Probs(onehot.view()), Reduction::None).unwrap();
    let Loss::PerSample(per) = per else { panic!() };
    assert!((per.sum() - sum).abs() < 1e-6);
    // ignore_index leaves a sample out of the mean.
    let Loss::Scalar(m) = cross_entropy(
        logits.view(),
        Targets::Classes(&[1.0, IGNORE_INDEX]),
        Reduction::Mean,
    )
    .unwrap() else {
        panic!()
    };
    assert!((m - per[0]).abs() < 1e-6);
    // Gradient: (softmax - onehot) / batch.
    let mut g = [0.0f32; 4];
    cross_entropy_with_grad(
        logits.as_slice().unwrap(),
        2,
        2,
        Targets::Classes(&labels),
        Reduction::Mean,
        &mut g,
    )
    .unwrap();
    let sm = 1.0 / (1.0 + 1.0f32.exp());
    assert!((g[0] - sm / 2.0).abs() < 1e-6 && (g[1] + sm / 2.0).abs() < 1e-6);
}

#[test]
fn pipelines_with_shr() {
    let m = Mode::Training { batch_size: 2 };
    let mut r = rng();
    let mut seq = (Dense::new(3, 4, m, &mut r).unwrap()
        >> Expon::new(4, 8.0, m).unwrap()
        >> Lif::new(4, LifParams::default(), m).unwrap())
    .build()
    .unwrap();
    assert_eq!((seq.num_in(), seq.num_out()), (3, 4));
    let s = save_state(&seq).unwrap();
    assert_eq!(
        s.keys().collect::<Vec<_>>(),
        ["Sequential0", "Dense0", "Expon0", "Lif0"]
    );
    let y = (Flow::new(Array2::ones((2, 3))).dt(1.0) >> &mut seq)
        .output()
        .unwrap();
    assert_eq!(y.dim(), (2, 4));
    let mut d = Dense::new(3, 4, m, &mut r).unwrap();
    let mut e = Expon::new(4, 8.0, m).unwrap();
    let y = (Flow::new(Array2::ones((2, 3))) >> &mut d >> &mut e)
        .output()
        .unwrap();
    assert_eq!(y.dim(), (2, 4));
    let bad = (Flow::new(Array2::ones((5, 3))) >> &mut d >> &mut e).output();
    assert!(matches!(
        bad,
        Err(NnError::BatchSize {
            expected: 2,
            found: 5,
            ..
        })
    ));
    let named = Sequential::named_children(vec![
        ("comm", Box::new(Dense::new(3, 4, m, &mut r).unwrap())),
        ("syn", Box::new(Expon::new(4, 8.0, m).unwrap())),
    ])
    .unwrap();
    assert_eq!(named.get("syn").unwrap().type_name(), "Expon");
    assert!(named.get("nope").is_none());
}
