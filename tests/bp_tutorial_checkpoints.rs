//! Issue 4, item 4: the tutorial's BrainPy checkpoints (brainstate-core/tests/fixtures/brainpy/,
//! written by BrainPy 2.8.2) load into the Rust twins of those models through `load_pytree`,
//! with no missing and no unexpected keys, and the models then hold the file's values.

use brainstate::ckpt::{load_pytree, save_pytree};
use brainstate::nn::{Dense, Init, Lif, LifParams, Mode, SnnConfig, TutorialSnn};
use brainstate::*;
use ndarray::Array1;
use rand::SeedableRng;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("brainstate-core/tests/fixtures/brainpy")
        .join(name)
}

/// The tutorial's example 1 with the real layers: `var`, Dense(784 -> 10, no bias), Lif(10).
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
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let params = LifParams {
        v_rest: 0.0,
        v_reset: 0.0,
        v_th: 1.0,
        tau: 2.0,
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
    for f in ["ex1_state_dict.bp", "ex1_save_state.bp"] {
        let mut net = example1();
        let tree = load_pytree(fixture(f), None, true).unwrap();
        // ExponentialEuler0 (the Lif's stateless integrator in net.state_dict()) carries nothing
        // and is not reported.
        let file_state = tree.to_state_tree().unwrap();
        let r = load_state_with(&mut net, &file_state, &LoadOptions::strict()).unwrap();
        assert_eq!(
            r.to_string(),
            "StateLoadResult(missing_keys=[], unexpected_keys=[])",
            "{f}"
        );
        let state = save_state(&net).unwrap();
        assert_eq!(
            state.keys().map(String::as_str).collect::<Vec<_>>(),
            ["SNN0", "Dense0", "Lif0"]
        );
        // Same keys, dtypes, shapes and values as BrainPy's, node by node.
        for (node, local) in state.iter() {
            assert_eq!(&file_state[node.as_str()], local, "{f}: {node}");
        }
    }
}

#[test]
fn example2_training_checkpoint_loads_into_the_twin_and_saves_back_identically() {
    let tree = load_pytree(fixture("ex2_training_ckpt.bp"), None, true).unwrap();
    let saved = tree.at("net").unwrap().value().to_state_tree().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut net = TutorialSnn::new(
        &SnnConfig::default(),
        Mode::Training { batch_size: 256 },
        &mut rng,
    )
    .unwrap();
    let r = load_state(&mut net, &saved).unwrap();
    assert!(r.missing_keys.is_empty() && r.unexpected_keys.is_empty(), "{r}");
    // The twin now holds exactly the file's state, in BrainPy's traversal order.
    assert!(save_state(&net).unwrap() == saved);
    assert_eq!(tree.at("epoch_i").unwrap().i64().unwrap(), 9);
    assert_eq!(tree.at("train_loss").unwrap().f64().unwrap(), 0.6971248388290405);
    // Saving the same checkpoint from Rust, as the tutorial does, gives BrainPy's file byte for byte.
    let ckpt = pytree! {
        "net" => save_state(&net).unwrap(),
        "epoch_i" => 9,
        "train_loss" => tree.at("train_loss").unwrap().tensor().unwrap().clone(),
    };
    let dir = std::env::temp_dir().join(format!("bp-tutorial-{}", std::process::id()));
    let p = save_pytree(dir.join("ckpt.bp"), &ckpt, true, None, false).unwrap();
    assert!(std::fs::read(&p).unwrap() == std::fs::read(fixture("ex2_training_ckpt.bp")).unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn example2_batch_size_is_adopted_only_when_allowed() {
    let tree = load_pytree(fixture("ex2_training_ckpt.bp"), None, true).unwrap();
    let saved = tree.at("net").unwrap().value().to_state_tree().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Built as in the tutorial (bm.training_environment(), batch size 1).
    let mut net = TutorialSnn::new(&SnnConfig::default(), Mode::training(), &mut rng).unwrap();
    let before = save_state(&net).unwrap();
    let no_adopt = LoadOptions {
        adopt_batch: false,
        ..LoadOptions::default()
    };
    let err = load_state_with(&mut net, &saved, &no_adopt).unwrap_err();
    assert!(
        err.to_string()
            .contains("Lif0.V: batch size 256 differs from the model's 1"),
        "{err}"
    );
    assert_eq!(
        save_state(&net).unwrap(),
        before,
        "a refused load changes nothing"
    );
    // With the default options the checkpoint's batch of 256 is adopted, as BrainPy does.
    assert!(load_state(&mut net, &saved).unwrap().is_exact());
    assert_eq!(save_state(&net).unwrap()["Lif0"]["Lif0.V"].shape(), &[256, 10]);
}
