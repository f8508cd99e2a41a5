//! Runs `examples/state_basics.rs` as a user would (its `run` with a temporary output folder) and
//! checks what it prints against BrainPy's tutorial.
#[path = "../examples/state_basics.rs"]
mod state_basics;

use brainstate::ckpt::{load_pytree, Format};
use state_basics::{run, Args};

#[test]
fn prints_the_tutorial_and_writes_loadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    run(
        &Args {
            out: dir.path().into(),
        },
        &mut out,
    )
    .unwrap();
    let s = String::from_utf8(out).unwrap();
    let global = "{'SNN0': {'SNN0.var': f32[1]},\n 'Dense0': {},\n 'Lif0': {'Lif0.V': f32[10], 'Lif0.spike': bool[10]}}";
    let expected_start = format!(
        "net = SNN()  # Dense 784 -> 10 (constant weights outside training), Lif(10)\n\
         \n>>> net.save_state()\n{{'SNN0.var': f32[1]}}\n\
         \n>>> bp.save_state(net)\n{global}\n\
         \n>>> bp.checkpoints.save_pytree('a.bp', net.state_dict())\nSaving checkpoint into {bp}\n\
         \n>>> states = bp.checkpoints.load_pytree('a.bp')\nLoading checkpoint from {bp}\n\
         \n>>> states\n{global}\n\
         \n>>> bp.load_state(net, states)\nStateLoadResult(missing_keys=[], unexpected_keys=[])\n",
        bp = dir.path().join("a.bp").display()
    );
    assert!(
        s.starts_with(&expected_start),
        "got:\n{s}\nexpected to start with:\n{expected_start}"
    );
    assert!(
        s.contains("into a fresh twin: StateLoadResult(missing_keys=[], unexpected_keys=[])"),
        "{s}"
    );

    // a.bp is BrainPy's format (a msgpack map, as BrainPy's own ex1 fixture); a.ckpt is native.
    let bp = std::fs::read(dir.path().join("a.bp")).unwrap();
    assert_eq!(Format::detect(&bp), Some(Format::BrainPy));
    let native = std::fs::read(dir.path().join("a.ckpt")).unwrap();
    assert_eq!(Format::detect(&native[..64]), Some(Format::Native));
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/brainstate-core/tests/fixtures/brainpy/ex1_save_state.bp"
    ))
    .unwrap();
    assert_eq!(
        bp, fixture,
        "the tutorial's a.bp is byte for byte what BrainPy writes"
    );
    assert_eq!(
        load_pytree(dir.path().join("a.bp"), None, true).unwrap(),
        load_pytree(dir.path().join("a.ckpt"), None, true).unwrap()
    );
}
