//! Spiking-network layers, initializers, surrogates, losses, optimizers and a BPTT trainer with
//! BrainPy's equations, defaults, names and state keys.
//!
//! ```
//! use brainstate_nn::*;
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let mut net = TutorialSnn::new(&SnnConfig::default(), Mode::training(), &mut rng).unwrap();
//! let mut opt = Adam::new(4e-3).unwrap();
//! opt.register(&net).unwrap();
//! let x = ndarray::Array3::<f32>::zeros((20, 8, 100)); // (time, batch, inputs)
//! let y = [0.0f32, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
//! let mut trainer = Bptt::new(1.0);
//! let x = SpikeInput::new(x).unwrap();
//! let loss = trainer.train_epoch(&mut net, &mut opt, &x, Targets::Classes(&y)).unwrap();
//! assert!(loss.is_finite());
//! let ckpt = checkpoint(&net, &opt, 0, []).unwrap();
//! let names: Vec<_> = ckpt.at("net").unwrap().map().unwrap().keys().cloned().collect();
//! assert_eq!(names, ["SNN0", "Lif0", "Integrator0", "Sequential0", "Sequential1", "Dense0", "Expon0", "Dense1", "Expon1"]);
//! ```
#![warn(missing_docs)]

// Links the system OpenBLAS that ndarray's `blas` feature calls (feature `openblas`).
#[cfg(feature = "openblas")]
extern crate blas_src;
pub mod dense;
pub mod error;
pub mod init;
pub mod layer;
pub mod loss;
pub mod mode;
pub mod neurons;
pub mod optim;
pub mod par;
pub mod sequential;
pub mod signal;
pub mod surrogate;
pub mod train;

pub use dense::Dense;

/// The library doing the large matrix products: `"openblas"` with the `openblas` feature (the
/// system OpenBLAS; on CPUs its runtime detection does not know, set `OPENBLAS_CORETYPE`, e.g.
/// `SkylakeX` or `Haswell`, or it falls back to slow generic kernels), else `"gemm"` (the `gemm`
/// crate's AVX-512 / AVX2 kernels, chosen at run time).
pub const MATMUL_BACKEND: &str = if cfg!(feature = "openblas") {
    "openblas"
} else {
    "gemm"
};

/// The kernel set OpenBLAS chose for this CPU (`OPENBLAS_CORETYPE` or its own detection), e.g.
/// `SkylakeX`; `Prescott` means detection failed and the products run on generic kernels.
/// `None` without the `openblas` feature.
pub fn openblas_core() -> Option<String> {
    #[cfg(feature = "openblas")]
    {
        extern "C" {
            fn openblas_get_corename() -> *const std::os::raw::c_char;
        }
        // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated name (or null).
        let p = unsafe { openblas_get_corename() };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated, static.
        let name = unsafe { std::ffi::CStr::from_ptr(p) };
        Some(name.to_string_lossy().into_owned())
    }
    #[cfg(not(feature = "openblas"))]
    None
}
pub use error::{NnError, Result};
pub use init::{Distr, FanMode, Init};
pub use layer::{Layer, ParamVisitor, Record};
pub use loss::{cross_entropy, cross_entropy_with_grad, Loss, Reduction, Targets, IGNORE_INDEX};
pub use mode::{Mode, DEFAULT_DT};
pub use neurons::{Expon, Integrator, Lif, LifParams, SpikeReset};
pub use optim::{Adam, Constant, Optimizer, Sgd};
pub use sequential::{Chain, Flow, Sequential, SnnConfig, TutorialSnn};
pub use signal::{EventsRef, Signal};
pub use surrogate::Surrogate;
pub use train::{checkpoint, gradients, restore, Bptt, SpikeInput};
