//! Typed errors of the nn crate: every one says what and where.

use brainstate_core::{NameError, StateError, TensorError};

/// Something the nn layers, losses, optimizers or the trainer could not do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NnError {
    /// Two layers of a pipeline do not fit: one's output size is not the next one's input size.
    #[error("shape mismatch at {at}: {from} gives {found} features but {to} expects {expected}")]
    LayerShape {
        /// Where in the model (container and position).
        at: String,
        /// The layer whose output is fed on.
        from: String,
        /// The layer that receives it.
        to: String,
        /// Input size of the receiving layer.
        expected: usize,
        /// Output size of the feeding layer.
        found: usize,
    },
    /// An input's feature size does not match the layer.
    #[error("input shape mismatch at {layer}: expected {expected} features per sample, found {found}")]
    InputShape {
        /// The layer given the input.
        layer: String,
        /// Expected number of features.
        expected: usize,
        /// Found number of features.
        found: usize,
    },
    /// An input's batch size does not match the layer's state (call `reset(batch_size)` first).
    #[error("batch size mismatch at {layer}: the state holds {expected} samples, the input {found} (call reset({found}) first)")]
    BatchSize {
        /// The layer whose state does not fit.
        layer: String,
        /// Batch size of the state.
        expected: usize,
        /// Batch size of the input.
        found: usize,
    },
    /// A non-finite value (NaN or infinity) in the input.
    #[error("non-finite input {value} at {what}[{}]", index.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "))]
    NonFinite {
        /// Which input (`x`, `logits`, ...).
        what: String,
        /// Index of the first bad element.
        index: Vec<usize>,
        /// The value.
        value: f32,
    },
    /// A class label outside `0..num_classes`, or not a whole number.
    #[error("label out of range at sample {sample}: {label} is not a class index in 0..{num_classes}")]
    Label {
        /// Sample index.
        sample: usize,
        /// The label.
        label: f32,
        /// Number of classes.
        num_classes: usize,
    },
    /// Targets and predictions disagree in shape.
    #[error("target shape mismatch in {what}: expected {expected:?}, found {found:?}")]
    TargetShape {
        /// Which function.
        what: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Found shape.
        found: Vec<usize>,
    },
    /// A layer or trainer parameter out of its domain (tau <= 0, empty layer, ...).
    #[error("invalid parameter {name} = {value} for {layer}: {reason}")]
    Param {
        /// The layer or object.
        layer: String,
        /// Parameter name.
        name: String,
        /// Its value, printed.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A variable no longer holds the dtype or shape the layer made it with (changed by hand).
    #[error("variable {key} holds {found}, the layer needs {expected}")]
    Variable {
        /// `<node>.<field>`.
        key: String,
        /// What the layer needs.
        expected: String,
        /// What is there.
        found: String,
    },
    /// The operation needs another mode (e.g. training needs `Mode::Training`).
    #[error("{what} needs {needed} mode, but {layer} is in {found} mode")]
    Mode {
        /// The operation.
        what: String,
        /// The layer.
        layer: String,
        /// Needed mode.
        needed: String,
        /// Actual mode.
        found: String,
    },
    /// The optimizer has no state for a trainable variable, or holds state for one the model lacks.
    #[error("optimizer {optimizer}: {problem}")]
    Optimizer {
        /// Optimizer name.
        optimizer: String,
        /// What is wrong.
        problem: String,
    },
    /// The model's node names are invalid or duplicated.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Loading state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A checkpoint tree lacks an entry or has the wrong type.
    #[error(transparent)]
    Pytree(#[from] brainstate_core::PytreeError),
}

impl NnError {
    pub(crate) fn var(key: String, err: TensorError) -> NnError {
        NnError::Variable {
            key,
            expected: "f32 values".into(),
            found: err.to_string(),
        }
    }
}

/// Result with [`NnError`].
pub type Result<T, E = NnError> = std::result::Result<T, E>;
