//! CheckpointManager: steps, retention rules, Flax's step rule, corrupt files, the lock.

mod common_ckpt;
use brainstate_core::ckpt::{save_pytree, BestMode, CheckpointError, CheckpointManager, ManagerOptions};
use brainstate_core::{pytree, DType, Pytree};
use common_ckpt::*;

fn tree(step: u64) -> Pytree {
    pytree! { "step" => step, "w" => tensor(DType::F32, &[64], step as u8) }
}

fn opts(f: impl FnOnce(&mut ManagerOptions)) -> ManagerOptions {
    let mut o = ManagerOptions::default();
    o.save.fsync = false;
    f(&mut o);
    o
}

#[test]
fn keeps_the_last_k_and_restores() {
    let d = tempdir("m_lastk");
    let mut m = CheckpointManager::open(&d, opts(|o| o.keep_last = Some(3))).unwrap();
    assert_eq!(m.latest_step(), None);
    assert!(matches!(
        m.restore(None),
        Err(CheckpointError::EmptyDirectory { .. })
    ));
    for s in 1..=10 {
        m.save(s * 10, &tree(s * 10), None).unwrap();
    }
    assert_eq!(m.steps(), [80, 90, 100]);
    assert_eq!(m.latest_step(), Some(100));
    assert_eq!(m.restore(None).unwrap(), tree(100));
    assert_eq!(m.restore(Some(80)).unwrap(), tree(80));
    assert!(matches!(
        m.restore(Some(70)),
        Err(CheckpointError::NoSuchStep { step: 70, .. })
    ));
    drop(m);
    // A new manager lists the same committed steps.
    let m = CheckpointManager::open(&d, opts(|o| o.keep_last = Some(3))).unwrap();
    assert_eq!(m.steps(), [80, 90, 100]);
    // load_pytree on the directory picks the latest step.
    assert_eq!(
        brainstate_core::ckpt::load_pytree(&d, None, true).unwrap(),
        tree(100)
    );
}

#[test]
fn keep_every_m_and_best_j() {
    let d = tempdir("m_rules");
    let mut m = CheckpointManager::open(
        &d,
        opts(|o| {
            o.keep_last = Some(1);
            o.keep_every = Some(4);
            o.keep_best = Some((2, BestMode::Min));
        }),
    )
    .unwrap();
    // metric per step; step 6 has none, step 7 is NaN.
    let metric = |s: u64| match s {
        6 => None,
        7 => Some(f64::NAN),
        3 => Some(0.1),
        5 => Some(0.2),
        _ => Some(1.0 + s as f64),
    };
    for s in 1..=9 {
        m.save(s, &tree(s), metric(s)).unwrap();
    }
    // last 1 (9), every 4 (4, 8), best 2 by min (3, 5).
    assert_eq!(m.steps(), [3, 4, 5, 8, 9]);
    assert_eq!(m.best_step(BestMode::Min), Some(3));
    assert_eq!(m.best_step(BestMode::Max), Some(9));
    assert_eq!(m.metric(5), Some(0.2));
    drop(m);
    let d = tempdir("m_max");
    let mut m = CheckpointManager::open(
        &d,
        opts(|o| {
            o.keep_best = Some((1, BestMode::Max));
        }),
    )
    .unwrap();
    for (s, x) in [(1, 0.5), (2, 0.9), (3, 0.9), (4, 0.1)] {
        m.save(s, &tree(s), Some(x)).unwrap();
    }
    // Tie between 2 and 3 goes to the later step; the newest (4) is never deleted.
    assert_eq!(m.steps(), [3, 4]);
}

#[test]
fn step_or_later_exists_is_an_error_unless_overwrite() {
    let d = tempdir("m_flax");
    let mut m = CheckpointManager::open(&d, opts(|_| {})).unwrap();
    m.save(5, &tree(5), None).unwrap();
    m.save(8, &tree(8), None).unwrap();
    for s in [5, 7, 8] {
        let e = m.save(s, &tree(s), None).unwrap_err();
        assert!(
            matches!(e, CheckpointError::StepExists { step, existing: 8, .. } if step == s),
            "{e}"
        );
    }
    // overwrite: step 7 is written and the later step 8 is deleted, as Flax.
    m.save_with(7, &tree(7), None, true).unwrap();
    assert_eq!(m.steps(), [5, 7]);
    m.save_with(7, &tree(70), None, true).unwrap();
    assert_eq!(m.restore(Some(7)).unwrap(), tree(70));
    assert!(!m.path_for(8).exists());
}

#[test]
fn uncommitted_and_corrupt_files_are_never_listed() {
    let d = tempdir("m_corrupt");
    let mut m = CheckpointManager::open(&d, opts(|_| {})).unwrap();
    m.save(1, &tree(1), None).unwrap();
    m.save(2, &tree(2), None).unwrap();
    drop(m);
    // Torn step 3, a file of step 4 that says it is step 2, a non-native step 5, a stale temp.
    let b = std::fs::read(d.join("checkpoint_2")).unwrap();
    std::fs::write(d.join("checkpoint_3"), &b[..b.len() - 2]).unwrap();
    std::fs::copy(d.join("checkpoint_2"), d.join("checkpoint_4")).unwrap();
    std::fs::write(d.join("checkpoint_5"), b"not a checkpoint").unwrap();
    save_pytree(d.join("checkpoint_6"), &tree(6), true, None, false).unwrap(); // no step meta
    let tmp = d.join(".checkpoint_7.bst-tmp-4194305-0123456789abcdef");
    std::fs::write(&tmp, &b).unwrap();
    let m = CheckpointManager::open(&d, opts(|_| {})).unwrap();
    assert_eq!(m.steps(), [1, 2]);
    assert_eq!(m.latest_step(), Some(2));
    assert!(!tmp.exists(), "stale temp of a dead process is removed at open");
}

#[test]
fn a_second_manager_is_locked_out() {
    let d = tempdir("m_lock");
    let m = CheckpointManager::open(&d, opts(|_| {})).unwrap();
    let e = CheckpointManager::open(&d, opts(|_| {})).unwrap_err();
    match &e {
        CheckpointError::Locked { holder, .. } => {
            assert_eq!(holder, &format!("pid {}", std::process::id()))
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("is locked by another manager"));
    drop(m);
    // Released on drop; a leftover lock file does not block.
    assert!(d.join(".brainstate-manager.lock").exists());
    CheckpointManager::open(&d, opts(|_| {})).unwrap();
}
