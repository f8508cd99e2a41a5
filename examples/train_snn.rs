//! The second part of BrainPy's save/load tutorial: train the spiking network for 10 epochs on
//! random spike trains, save `{'net', 'epoch_i', 'train_loss'}` whenever the loss improves,
//! reload the best checkpoint into a freshly built twin, and plot the loss curve and a spike
//! raster (SVG).
//!
//! Run: `cargo run --release --example train_snn [-- --epochs 10 --samples 256 --seed 0 --out DIR]`
//!
//! ```text
//! num_in, num_rec = 100, 10
//! with bm.training_environment():
//!     net = SNN(num_in, num_rec, 2)   # Lif(10, tau=10) -> Integrator(2, tau=5), Linear+Expon synapses
//! x_data[mask < freq * bm.get_dt() / 1000.] = 1.0     # 100 steps x 256 samples x 100 inputs, 10 Hz
//! y_data = bm.asarray(bm.random.rand(num_sample) < 0.5, dtype=bm.float_)
//! for i in range(10):
//!     l = trainer.f_train()
//!     if l < loss:
//!         loss = l
//!         states = {'net': bp.save_state(net), 'epoch_i': i, 'train_loss': loss}
//!         bp.checkpoints.save_pytree('snn.bp', states, verbose=False)
//!         print(f'Epoch {i}, loss {loss}')
//! ```
use brainstate::ckpt::{load_pytree, save_pytree};
use brainstate::nn::{
    Adam, Bptt, Layer, Mode, Optimizer, Record, SnnConfig, SpikeInput, Targets, TutorialSnn,
};
use brainstate::*;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array3;
use plotters::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Command-line flags; the defaults are the tutorial's.
#[derive(Debug, Clone, Parser)]
#[command(about = "BrainPy's save/load tutorial, part 2: train a spiking network with checkpoints")]
pub struct Args {
    /// Training epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Samples (the batch of each epoch).
    #[arg(long, default_value_t = 256)]
    pub samples: usize,
    /// Time steps per sample (dt = 1 ms).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Input neurons.
    #[arg(long, default_value_t = 100)]
    pub num_in: usize,
    /// Recurrent (Lif) neurons.
    #[arg(long, default_value_t = 10)]
    pub num_rec: usize,
    /// Input firing rate in Hz.
    #[arg(long, default_value_t = 10.0)]
    pub freq: f32,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 4e-3)]
    pub lr: f32,
    /// Seed of the data and the initial weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for the checkpoint and the plots.
    #[arg(long, default_value = "target/train_snn")]
    pub out: PathBuf,
    /// Checkpoint file name in the folder: `.bp` writes BrainPy's format (as the tutorial),
    /// anything else the native format.
    #[arg(long, default_value = "snn.bp")]
    pub checkpoint: String,
    /// Never show the progress bar (it is only shown when stdout is a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// What a run produced.
#[derive(Debug)]
pub struct Summary {
    /// The loss of every epoch.
    pub losses: Vec<f32>,
    /// The epoch of the best checkpoint and its loss.
    pub best: (usize, f32),
    /// What loading the best checkpoint into a fresh twin reported.
    pub reload: StateLoadResult,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// The loss curve.
    pub loss_svg: PathBuf,
    /// The spike raster.
    pub raster_svg: PathBuf,
    /// Training time.
    pub train_time: Duration,
}

type BoxError = Box<dyn std::error::Error>;

/// Random spike trains (`steps x samples x num_in`, rate `freq` at dt = 1 ms) and random labels.
pub fn dataset(args: &Args, rng: &mut StdRng) -> (Array3<f32>, Vec<f32>) {
    let dt_ms = 1.0f32;
    let p = args.freq * dt_ms / 1000.0;
    let x = Array3::from_shape_simple_fn((args.steps, args.samples, args.num_in), || {
        if rng.gen::<f32>() < p {
            1.0
        } else {
            0.0
        }
    });
    let y = (0..args.samples)
        .map(|_| if rng.gen::<f32>() < 0.5 { 1.0 } else { 0.0 })
        .collect();
    (x, y)
}

fn config(args: &Args) -> SnnConfig {
    SnnConfig {
        num_in: args.num_in,
        num_rec: args.num_rec,
        num_out: 2,
        ..SnnConfig::default()
    }
}

/// Trains, checkpoints, reloads and plots; prints the tutorial's lines to `out`.
pub fn run(args: &Args, progress: bool, out: &mut dyn Write) -> Result<Summary, BoxError> {
    std::fs::create_dir_all(&args.out)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let (x, y) = dataset(args, &mut rng);
    let input = SpikeInput::new(x)?;
    let mut net = TutorialSnn::new(&config(args), Mode::training(), &mut rng)?;
    let mut opt = Adam::new(args.lr)?;
    opt.register(&net)?;
    let mut trainer = Bptt::new(1.0);
    writeln!(
        out,
        "SNN {} -> Lif({}) -> Integrator(2); {} samples x {} steps, {} Hz input, {} epochs",
        args.num_in, args.num_rec, args.samples, args.steps, args.freq, args.epochs
    )?;

    let file = args.out.join(&args.checkpoint);
    let bar = progress.then(|| {
        let b = ProgressBar::new(args.epochs as u64);
        b.set_style(
            ProgressStyle::with_template("{spinner} epoch {pos}/{len} [{bar:30}] {elapsed_precise} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(100));
        b
    });
    let say = |out: &mut dyn Write, line: String| -> std::io::Result<()> {
        match &bar {
            Some(b) => {
                b.suspend(|| writeln!(out, "{line}"))?;
                Ok(())
            }
            None => writeln!(out, "{line}"),
        }
    };

    let started = Instant::now();
    let mut losses = Vec::with_capacity(args.epochs);
    let mut best: Option<(usize, f32)> = None;
    for i in 0..args.epochs {
        let l = trainer.train_epoch(&mut net, &mut opt, &input, Targets::Classes(&y))?;
        losses.push(l);
        if best.is_none_or(|(_, b)| l < b) {
            best = Some((i, l));
            let states = pytree! { "net" => save_state(&net)?, "epoch_i" => i, "train_loss" => l };
            save_pytree(&file, &states, true, None, false)?;
            say(out, format!("Epoch {i}, loss {}", l as f64))?;
        }
        if let Some(b) = &bar {
            b.set_message(format!("loss {l:.4}"));
            b.inc(1);
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let train_time = started.elapsed();
    let best = best.ok_or("no epochs were run (--epochs 0)")?;
    writeln!(
        out,
        "trained {} epochs in {:.2} s; best checkpoint: epoch {}, loss {} -> {}",
        args.epochs,
        train_time.as_secs_f64(),
        best.0,
        best.1 as f64,
        file.display()
    )?;

    // Model loading, into a freshly built twin (other random weights until the load).
    writeln!(out, "Loading checkpoint from {}", file.display())?;
    let state_dict = load_pytree(&file, None, true)?;
    let mut twin = TutorialSnn::new(
        &config(args),
        Mode::training(),
        &mut StdRng::seed_from_u64(!args.seed),
    )?;
    let reload = load_state(&mut twin, &state_dict.get("net")?.state_tree()?)?;
    writeln!(out, "{reload}")?;
    let epoch_i = state_dict.get("epoch_i")?.i64()?;
    let train_loss = state_dict.get("train_loss")?.f64()?;
    writeln!(out, "checkpoint: epoch_i = {epoch_i}, train_loss = {train_loss}")?;

    let acc = accuracy(&mut twin, &mut trainer, &input, &y)?;
    writeln!(
        out,
        "the reloaded twin classifies {:.1}% of the training samples correctly",
        acc * 100.0
    )?;

    let loss_svg = args.out.join("loss.svg");
    plot_loss(&loss_svg, &losses, best)?;
    let raster_svg = args.out.join("raster.svg");
    let sample = SpikeInput::new(input.values().slice(ndarray::s![.., 0..1, ..]).to_owned())?;
    let spikes = record_spikes(&mut twin, &sample)?;
    plot_raster(&raster_svg, &sample, &spikes, args.num_rec)?;
    writeln!(out, "loss curve: {}", loss_svg.display())?;
    writeln!(out, "spike raster: {}", raster_svg.display())?;
    writeln!(
        out,
        "look inside the checkpoint: cargo run -p brainstate-cli -- inspect {}",
        file.display()
    )?;
    Ok(Summary {
        losses,
        best,
        reload,
        checkpoint: file,
        loss_svg,
        raster_svg,
        train_time,
    })
}

/// Share of samples whose largest output over time is the label's.
fn accuracy(net: &mut TutorialSnn, trainer: &mut Bptt, x: &SpikeInput, y: &[f32]) -> Result<f64, BoxError> {
    trainer.forward(net, x, false)?;
    let logits = trainer.logits();
    let right = logits
        .outer_iter()
        .zip(y)
        .filter(|(row, &label)| {
            let guess = if row[1] > row[0] { 1.0 } else { 0.0 };
            guess == label
        })
        .count();
    Ok(right as f64 / y.len().max(1) as f64)
}

/// Runs one sample (batch of 1) through `net` and returns, for each time step, the indices of
/// the Lif neurons that spiked.
fn record_spikes(net: &mut TutorialSnn, sample: &SpikeInput) -> Result<Vec<Vec<usize>>, BoxError> {
    net.reset(1);
    let mut out = Vec::with_capacity(sample.num_steps());
    for t in 0..sample.num_steps() {
        net.step(1.0, sample.signal(t), Record::Off)?;
        let mut fired = Vec::new();
        let mut err = None;
        net.r.visit_variables(&mut |key, var| {
            if key == "spike" {
                match var.array::<f32>() {
                    Ok(a) => fired.extend(a.iter().enumerate().filter(|(_, s)| **s > 0.0).map(|(i, _)| i)),
                    Err(e) => err = Some(e),
                }
            }
        });
        if let Some(e) = err {
            return Err(e.into());
        }
        out.push(fired);
    }
    Ok(out)
}

fn plot_loss(path: &Path, losses: &[f32], best: (usize, f32)) -> Result<(), BoxError> {
    let root = SVGBackend::new(path, (640, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = losses
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &l| {
            (a.min(l), b.max(l))
        });
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption("Training loss (cross entropy)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(
            -0.5f32..(losses.len() as f32 - 0.5).max(0.5),
            (lo - pad)..(hi + pad),
        )?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("loss")
        .x_labels(losses.len().min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    let pts: Vec<(f32, f32)> = losses.iter().enumerate().map(|(i, &l)| (i as f32, l)).collect();
    chart.draw_series(LineSeries::new(pts.iter().copied(), &BLUE))?;
    chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    chart.draw_series(std::iter::once(Circle::new(
        (best.0 as f32, best.1),
        6,
        RED.stroke_width(2),
    )))?;
    root.present()?;
    Ok(())
}

fn plot_raster(path: &Path, sample: &SpikeInput, rec: &[Vec<usize>], num_rec: usize) -> Result<(), BoxError> {
    let root = SVGBackend::new(path, (720, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(300);
    let steps = sample.num_steps() as f32;
    let x = sample.values();
    let mut chart = ChartBuilder::on(&top)
        .caption("Input spikes (sample 0)", ("sans-serif", 18))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(30)
        .y_label_area_size(44)
        .build_cartesian_2d(0f32..steps, -0.5f32..(sample.num_features() as f32 - 0.5))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("time (ms)")
        .y_desc("input")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    chart.draw_series(
        x.indexed_iter()
            .filter(|(_, v)| **v > 0.0)
            .map(|((t, _, i), _)| Circle::new((t as f32, i as f32), 2, BLACK.filled())),
    )?;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("Lif spikes of the trained network", ("sans-serif", 18))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(30)
        .y_label_area_size(44)
        .build_cartesian_2d(0f32..steps, -0.5f32..(num_rec as f32 - 0.5))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("time (ms)")
        .y_desc("neuron")
        .y_labels(num_rec.min(20))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    chart.draw_series(
        rec.iter()
            .enumerate()
            .flat_map(|(t, fired)| fired.iter().map(move |&n| (t as f32, n as f32)))
            .map(|p| Circle::new(p, 3, RED.filled())),
    )?;
    root.present()?;
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let progress = !args.no_progress && std::io::stdout().is_terminal();
    run(&args, progress, &mut std::io::stdout().lock())?;
    Ok(())
}
