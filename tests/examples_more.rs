//! Runs `examples/custom_state.rs` and `examples/brainpy_interop.rs` as a user would and checks
//! what they print and write.
#[path = "../examples/brainpy_interop.rs"]
#[allow(dead_code)]
mod brainpy_interop;
#[path = "../examples/custom_state.rs"]
mod custom_state;

#[test]
fn custom_state_prints_the_tutorials_keys_and_loads_back() {
    let mut out = Vec::new();
    custom_state::run(&mut out).unwrap();
    let s = String::from_utf8(out).unwrap();
    let keys: Vec<&str> = s
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(keys, ["a", "b", "c", "d0", "d1"], "{s}");
    assert!(s.contains("save_state(&obj) keys: [\"YourClass0\"]"), "{s}");
    assert!(
        s.contains("-> StateLoadResult(missing_keys=[], unexpected_keys=[])"),
        "{s}"
    );
    assert!(s.contains("other.a = 1,"), "{s}");
}

#[test]
fn brainpy_interop_loads_brainpys_checkpoint_and_writes_it_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let same = brainpy_interop::demo(
        &brainpy_interop::brainpy_tutorial_checkpoint(),
        dir.path(),
        &mut out,
    )
    .unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(same, "{s}");
    assert!(s.contains("epoch_i = 9, train_loss = 0.6971248388290405"), "{s}");
    assert!(
        s.contains("-> StateLoadResult(missing_keys=[], unexpected_keys=[])"),
        "{s}"
    );
    assert!(s.contains("is byte-identical to BrainPy's file: true"), "{s}");
}

#[test]
fn brainpy_interop_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.bp");
    let mut bytes = std::fs::read(brainpy_interop::brainpy_tutorial_checkpoint()).unwrap();
    bytes.truncate(1000);
    std::fs::write(&bad, bytes).unwrap();
    let err = brainpy_interop::demo(&bad, dir.path(), &mut Vec::new()).unwrap_err();
    assert!(!err.to_string().is_empty());
    assert!(!dir.path().join("snn_from_rust.bp").exists());
}
