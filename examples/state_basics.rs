//! The first part of BrainPy's save/load tutorial: local state, global state, save to a file,
//! load it back, assign it to the network.
//!
//! Run: `cargo run --example state_basics [-- --out DIR]`
//!
//! ```text
//! class SNN(bp.DynamicalSystem):
//!     def __init__(self):
//!         super().__init__()
//!         self.var = bm.Variable(bm.zeros(1))
//!         self.l1 = bp.dnn.Dense(28 * 28, 10, b_initializer=None)
//!         self.l2 = bp.dyn.Lif(10, V_rest=0., V_reset=0., V_th=1., tau=2.0,
//!                              spk_fun=bm.surrogate.Arctan())
//! ```
use brainstate::ckpt::{load_pytree, save_pytree};
use brainstate::nn::{Dense, Init, Layer, Lif, LifParams, Mode, Surrogate};
use brainstate::*;
use clap::Parser;
use ndarray::Array1;
use rand::{rngs::StdRng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;

/// The tutorial's network, built outside training mode (BrainPy's default `NonBatchingMode`):
/// the Dense weights are constants there, so `Dense0` saves nothing, as in BrainPy.
#[derive(Stateful)]
#[allow(clippy::upper_case_acronyms)]
pub struct SNN {
    #[stateful(name)]
    name: NodeName,
    var: Variable,
    l1: Dense,
    l2: Lif,
}

impl SNN {
    /// `SNN()`: a variable of one zero, `Dense(784, 10, b_initializer=None)`,
    /// `Lif(10, V_rest=0, V_reset=0, V_th=1, tau=2, spk_fun=Arctan())`.
    pub fn new(rng: &mut StdRng) -> Result<SNN, brainstate::nn::NnError> {
        let mode = Mode::NonBatching;
        let lif = LifParams {
            v_rest: 0.0,
            v_reset: 0.0,
            v_th: 1.0,
            tau: 2.0,
            surrogate: Surrogate::arctan(),
            ..LifParams::default()
        };
        Ok(SNN {
            name: NodeName::auto(),
            var: Variable::new(Array1::<f32>::zeros(1)),
            l1: Dense::with_init(28 * 28, 10, Init::xavier_normal(1.0), None, mode, rng)?,
            l2: Lif::new(10, lif, mode)?,
        })
    }

    /// Sizes of the layers, to show what was built.
    pub fn describe(&self) -> String {
        format!(
            "Dense {} -> {} (constant weights outside training), Lif({})",
            self.l1.num_in(),
            self.l1.num_out(),
            self.l2.num_out()
        )
    }
}

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(about = "BrainPy's save/load tutorial, part 1: local and global state, save, load")]
pub struct Args {
    /// Folder for the checkpoint files.
    #[arg(long, default_value = "target/state_basics")]
    pub out: PathBuf,
}

/// Runs the tutorial, printing to `out`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&args.out)?;
    let mut rng = StdRng::seed_from_u64(0);
    let mut net = SNN::new(&mut rng)?;
    writeln!(out, "net = SNN()  # {}", net.describe())?;

    writeln!(out, "\n>>> net.save_state()")?;
    writeln!(out, "{}", net.save_state())?;

    writeln!(out, "\n>>> bp.save_state(net)")?;
    writeln!(out, "{}", save_state(&net)?)?;

    // BrainPy's own file format, as the tutorial (a file BrainPy can load).
    let file = args.out.join("a.bp");
    writeln!(out, "\n>>> bp.checkpoints.save_pytree('a.bp', net.state_dict())")?;
    writeln!(out, "Saving checkpoint into {}", file.display())?;
    save_pytree(&file, &Pytree::from(net.state_dict()?), true, None, false)?;

    writeln!(out, "\n>>> states = bp.checkpoints.load_pytree('a.bp')")?;
    writeln!(out, "Loading checkpoint from {}", file.display())?;
    let loaded = load_pytree(&file, None, true)?;
    let states = loaded.to_state_tree()?;
    writeln!(out, "\n>>> states")?;
    writeln!(out, "{states}")?;

    writeln!(out, "\n>>> bp.load_state(net, states)")?;
    let result = load_state(&mut net, &states)?;
    writeln!(out, "{result}")?;

    // The same through the native format (checksummed), into a freshly built twin: the twin
    // gets the same names (SNN0, Dense0, Lif0), so nothing is missing.
    let native = args.out.join("a.ckpt");
    save_pytree(&native, &Pytree::from(save_state(&net)?), true, None, false)?;
    let mut twin = SNN::new(&mut rng)?;
    let twin_result = load_state(&mut twin, &load_pytree(&native, None, true)?.to_state_tree()?)?;
    writeln!(
        out,
        "\nnative file {} into a fresh twin: {twin_result}",
        native.display()
    )?;
    writeln!(
        out,
        "look inside: cargo run -p brainstate-cli -- inspect {}",
        file.display()
    )?;
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    run(&args, &mut std::io::stdout().lock())
}
