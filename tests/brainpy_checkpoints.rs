//! Checkpoints written by the real BrainPy (the tutorial's) load into the Rust twins of those
//! models with nothing missing and nothing unexpected, and the values arrive intact.
use brainstate::ckpt::load_pytree;
use brainstate::nn::{Dense, Init, Lif, LifParams, Mode, SnnConfig, Surrogate, TutorialSnn};
use brainstate::*;
use ndarray::Array1;
use rand::SeedableRng;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("brainstate-core/tests/fixtures/brainpy")
        .join(name)
}

/// The tutorial's first model: `SNN` with `var`, `Dense(784, 10, b_initializer=None)` and
/// `Lif(10, V_rest=0, V_reset=0, V_th=1, tau=2, spk_fun=Arctan())`, not in training mode.
#[derive(Stateful)]
#[allow(clippy::upper_case_acronyms)]
struct SNN {
    #[stateful(name)]
    name: NodeName,
    var: Variable,
    l1: Dense,
    l2: Lif,
}

fn example1() -> SNN {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let params = LifParams {
        v_rest: 0.0,
        v_reset: 0.0,
        v_th: 1.0,
        tau: 2.0,
        surrogate: Surrogate::arctan(),
        ..LifParams::default()
    };
    SNN {
        name: NodeName::auto(),
        var: Variable::new(Array1::<f32>::zeros(1)),
        l1: Dense::with_init(
            28 * 28,
            10,
            Init::xavier_normal(1.0),
            None,
            Mode::NonBatching,
            &mut rng,
        )
        .unwrap(),
        l2: Lif::new(10, params, Mode::NonBatching).unwrap(),
    }
}

#[test]
fn example1_checkpoints_load_into_the_twin() {
    for file in ["ex1_save_state.bp", "ex1_state_dict.bp"] {
        let tree = load_pytree(fixture(file), None, false).unwrap();
        let state = tree.to_state_tree().unwrap();
        let mut net = example1();
        let report = load_state_with(&mut net, &state, &LoadOptions::strict()).unwrap();
        assert_eq!(
            report.to_string(),
            "StateLoadResult(missing_keys=[], unexpected_keys=[])",
            "{file}"
        );
        // The Rust model's own state has the same keys, dtypes and shapes as BrainPy's.
        let ours = save_state(&net).unwrap();
        assert_eq!(ours.keys().collect::<Vec<_>>(), ["SNN0", "Dense0", "Lif0"]);
        for (node, local) in ours.iter() {
            assert_eq!(&state[node.as_str()], local, "{file}: {node}");
        }
    }
}

#[test]
fn example2_training_checkpoint_loads_into_the_twin() {
    let tree = load_pytree(fixture("ex2_training_ckpt.bp"), None, false).unwrap();
    assert_eq!(tree.get("epoch_i").unwrap().i64().unwrap(), 9);
    let loss = tree.get("train_loss").unwrap().f64().unwrap();
    assert!((loss - 0.6971248388290405).abs() < 1e-7, "{loss}");
    let state = tree.get("net").unwrap().state_tree().unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Built as in the tutorial (bm.training_environment(), batch size 1); the checkpoint's
    // batch of 256 is adopted, as BrainPy does.
    let mut net = TutorialSnn::new(&SnnConfig::default(), Mode::training(), &mut rng).unwrap();
    let report = load_state_with(&mut net, &state, &LoadOptions::strict()).unwrap();
    assert!(report.is_exact(), "{report}");
    let ours = save_state(&net).unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
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
    for (node, local) in ours.iter() {
        assert_eq!(&state[node.as_str()], local, "{node}");
    }
    assert_eq!(ours["Lif0"]["Lif0.V"].shape(), &[256, 10]);
    assert_eq!(ours["Dense0"]["Dense0.W"].shape(), &[100, 10]);

    // Without adopting the batch size the same load is refused, and nothing changes.
    let mut fresh = TutorialSnn::new(&SnnConfig::default(), Mode::training(), &mut rng).unwrap();
    let before = save_state(&fresh).unwrap();
    let no_adopt = LoadOptions {
        adopt_batch: false,
        ..LoadOptions::default()
    };
    let err = load_state_with(&mut fresh, &state, &no_adopt).unwrap_err();
    assert!(
        err.to_string()
            .contains("Lif0.V: batch size 256 differs from the model's 1"),
        "{err}"
    );
    assert_eq!(save_state(&fresh).unwrap(), before);
}
