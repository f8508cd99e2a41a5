#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub use brainstate_core::*;
pub use brainstate_derive::Stateful;

/// Spiking-network layers, initializers, surrogates, losses, optimizers and the trainer.
pub use brainstate_nn as nn;
