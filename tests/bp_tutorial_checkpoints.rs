//! The tutorial's training checkpoint (written by BrainPy 2.8.2) loaded into the Rust twin and
//! saved again from Rust as the tutorial saves it gives BrainPy's file byte for byte
//! (tests/brainpy_checkpoints.rs covers the loading itself).

use brainstate::ckpt::{load_pytree, save_pytree};
use brainstate::nn::{Mode, SnnConfig, TutorialSnn};
use brainstate::*;
use rand::SeedableRng;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("brainstate-core/tests/fixtures/brainpy")
        .join(name)
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
