//! Runs `examples/train_snn.rs` as a user would (its `run`, with small sizes and a temporary
//! output folder) and checks what it prints and writes.
#[path = "../examples/train_snn.rs"]
mod train_snn;

use brainstate::ckpt::{load_pytree, Format};
use clap::Parser;
use train_snn::{run, Args};

fn small(out: &std::path::Path, extra: &[&str]) -> Args {
    let mut argv = vec![
        "train_snn",
        "--epochs",
        "4",
        "--samples",
        "16",
        "--steps",
        "40",
        "--out",
    ];
    let out = out.to_str().unwrap();
    argv.push(out);
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv).unwrap()
}

#[test]
fn defaults_are_the_tutorials() {
    let a = Args::try_parse_from(["train_snn"]).unwrap();
    assert_eq!(
        (a.epochs, a.samples, a.steps, a.num_in, a.num_rec),
        (10, 256, 100, 100, 10)
    );
    assert_eq!((a.freq, a.lr, a.seed), (10.0, 4e-3, 0));
    assert_eq!(a.checkpoint, "snn.bp");
    assert_eq!(a.out, std::path::Path::new("target/train_snn"));
}

#[test]
fn trains_checkpoints_reloads_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let args = small(dir.path(), &[]);
    let mut out = Vec::new();
    let s = run(&args, false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    // "Epoch i, loss x" for every improvement, as the tutorial prints them.
    let epochs: Vec<(usize, f64)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("Epoch "))
        .map(|l| {
            let (i, loss) = l.split_once(", loss ").expect("Epoch i, loss x");
            (i.parse().unwrap(), loss.parse().unwrap())
        })
        .collect();
    assert_eq!(epochs[0].0, 0, "{text}");
    assert!(
        epochs.windows(2).all(|w| w[0].0 < w[1].0 && w[1].1 < w[0].1),
        "{text}"
    );
    assert_eq!(s.losses.len(), 4);
    assert!(
        text.contains(&format!(
            "trained 4 epochs in {:.2} s",
            s.train_time.as_secs_f64()
        )),
        "{text}"
    );
    assert!(s.losses.iter().all(|l| l.is_finite() && *l > 0.0));
    let (best_epoch, best_loss) = s.best;
    assert_eq!(*epochs.last().unwrap(), (best_epoch, best_loss as f64));
    assert_eq!(best_loss, s.losses.iter().copied().fold(f32::INFINITY, f32::min));

    // The reload into a fresh twin, printed as BrainPy prints it.
    assert!(
        lines.contains(&"StateLoadResult(missing_keys=[], unexpected_keys=[])"),
        "{text}"
    );
    assert!(s.reload.is_exact());
    assert!(text.contains(&format!("Loading checkpoint from {}", s.checkpoint.display())));

    // The checkpoint holds the best epoch, as the tutorial's {'net', 'epoch_i', 'train_loss'}.
    let bytes = std::fs::read(&s.checkpoint).unwrap();
    assert_eq!(Format::detect(&bytes[..16]), Some(Format::BrainPy));
    let ckpt = load_pytree(&s.checkpoint, None, true).unwrap();
    let keys: Vec<&String> = ckpt.root().map().unwrap().keys().collect();
    assert_eq!(keys, ["net", "epoch_i", "train_loss"]);
    assert_eq!(ckpt.get("epoch_i").unwrap().i64().unwrap(), best_epoch as i64);
    assert_eq!(ckpt.get("train_loss").unwrap().f64().unwrap(), best_loss as f64);
    let nodes: Vec<String> = ckpt.get("net").unwrap().map().unwrap().keys().cloned().collect();
    assert_eq!(
        nodes,
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
    let w = ckpt
        .at("net/Dense0/Dense0.W")
        .unwrap()
        .tensor()
        .unwrap()
        .shape()
        .to_vec();
    assert_eq!(w, [100, 10]);

    // Two SVG plots, with their text and marks, named in the output.
    for (svg, what) in [(&s.loss_svg, "Training loss"), (&s.raster_svg, "Lif spikes")] {
        let body = std::fs::read_to_string(svg).unwrap();
        assert!(
            body.starts_with("<svg") && body.trim_end().ends_with("</svg>"),
            "{}",
            svg.display()
        );
        assert!(
            body.contains(what) && body.contains("<circle"),
            "{}",
            svg.display()
        );
        assert!(text.contains(&svg.display().to_string()), "{text}");
    }
    // One marker per loss plus the best one.
    let loss_svg = std::fs::read_to_string(&s.loss_svg).unwrap();
    assert_eq!(loss_svg.matches("<circle").count(), 4 + 1);
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let dir = tempfile::tempdir().unwrap();
    let a = run(&small(&dir.path().join("a"), &[]), false, &mut Vec::new()).unwrap();
    let b = run(&small(&dir.path().join("b"), &[]), false, &mut Vec::new()).unwrap();
    assert_eq!(a.losses, b.losses);
    assert_eq!(
        std::fs::read(&a.checkpoint).unwrap(),
        std::fs::read(&b.checkpoint).unwrap()
    );
    let c = run(
        &small(&dir.path().join("c"), &["--seed", "7"]),
        false,
        &mut Vec::new(),
    )
    .unwrap();
    assert_ne!(a.losses, c.losses);
}

#[test]
fn native_checkpoint_and_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = small(dir.path(), &["--checkpoint", "snn.ckpt"]);
    args.epochs = 2;
    let s = run(&args, false, &mut Vec::new()).unwrap();
    assert_eq!(s.losses.len(), 2);
    let bytes = std::fs::read(&s.checkpoint).unwrap();
    assert_eq!(Format::detect(&bytes[..16]), Some(Format::Native));
    assert!(s.reload.is_exact());
    // Zero epochs is an error, not a panic.
    args.epochs = 0;
    let e = run(&args, false, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("no epochs"), "{e}");
    assert!(Args::try_parse_from(["train_snn", "--epochs", "x"]).is_err());
}
