//! Computation modes, as BrainPy's `NonBatchingMode`, `BatchingMode` and `TrainingMode`.

use std::fmt;

/// BrainPy's default step size `dt` in ms (`bm.get_dt()` before any `set_dt`).
pub const DEFAULT_DT: f32 = 0.1;

/// How a layer holds its state and weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// One sample, state without batch axis (`(n,)`); weights are constants (not saved); spikes are
    /// bool and the reset is always hard.
    #[default]
    NonBatching,
    /// A batch of samples, state `(batch, n)` with batch axis 0; weights constant; spikes bool, hard reset.
    Batching {
        /// Number of samples.
        batch_size: usize,
    },
    /// Training: state `(batch, n)` with batch axis 0; weights are trainable variables (saved as
    /// `Dense0.W`, `Dense0.b`); spikes are f32 and the reset is the Lif's configured one.
    Training {
        /// Number of samples.
        batch_size: usize,
    },
}

impl Mode {
    /// BrainPy's `bm.training_environment()` with its default batch size 1.
    pub fn training() -> Mode {
        Mode::Training { batch_size: 1 }
    }

    /// True in training mode.
    pub fn is_training(self) -> bool {
        matches!(self, Mode::Training { .. })
    }

    /// True when the state has a batch axis.
    pub fn is_batching(self) -> bool {
        !matches!(self, Mode::NonBatching)
    }

    /// Number of samples the state holds (1 without batch axis).
    pub fn batch_size(self) -> usize {
        match self {
            Mode::NonBatching => 1,
            Mode::Batching { batch_size } | Mode::Training { batch_size } => batch_size,
        }
    }

    /// The same kind of mode with another batch size (no effect on [`Mode::NonBatching`]).
    pub fn with_batch_size(self, batch_size: usize) -> Mode {
        match self {
            Mode::NonBatching => Mode::NonBatching,
            Mode::Batching { .. } => Mode::Batching { batch_size },
            Mode::Training { .. } => Mode::Training { batch_size },
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::NonBatching => write!(f, "non-batching"),
            Mode::Batching { batch_size } => write!(f, "batching (batch {batch_size})"),
            Mode::Training { batch_size } => write!(f, "training (batch {batch_size})"),
        }
    }
}

/// Exponential-Euler coefficients of `dx/dt = (target - x)/tau` for one step `dt`, as BrainPy's
/// `exp_auto`: `x_new = x + dt*phi1(-dt/tau)*(target - x)/tau`, `phi1(z) = (e^z - 1)/z`.
///
/// Returns `(k, decay)` with `k = dt*phi1/tau = 1 - e^{-dt/tau}` (the weight of the target) and
/// `decay = 1 - k = e^{-dt/tau}`, computed in f64 and rounded once.
pub fn exp_euler(dt: f32, tau: f32) -> (f32, f32) {
    let z = -(dt as f64) / (tau as f64);
    let k = -z.exp_m1();
    (k as f32, (1.0 - k) as f32)
}
