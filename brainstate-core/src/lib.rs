//! Values, state, naming, traversal and pytrees for brainstate: BrainPy's state system in Rust.
//!
//! Most users depend on the facade crate `brainstate`, which re-exports everything here.
#![warn(missing_docs)]

pub mod bpformat;
pub mod ckpt;
pub mod dtype;
pub mod interop;
pub mod naming;
pub mod node;
pub mod pytree;
pub mod state;
pub mod tensor;
pub mod variable;

#[doc(hidden)]
pub mod __private;

pub use dtype::{DType, Element, C128, C64};
pub use indexmap::IndexMap;
pub use naming::{init_names, is_identifier, NameError, NodeName};
pub use node::{
    for_each_node_mut, for_each_preorder, load_local, load_state, load_state_with, local_key, nodes,
    save_state, variables, variables_mut, CustomState, StateError, StateField, Stateful, StatefulExt,
};
pub use pytree::{Node, Pytree, PytreeError, PytreeMap};
pub use state::{
    prefix_key, Checker, LoadError, LoadOptions, LoadProblem, LocalCheck, StateDict, StateLoadResult,
    StateTree,
};
pub use tensor::{checked_nbytes, Storable, Tensor, TensorError};
pub use variable::Variable;
