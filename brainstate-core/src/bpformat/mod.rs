//! BrainPy's checkpoint format (Flax-derived msgpack), read and written byte for byte.
//!
//! Owned by the BrainPy-interop work (issue 4). Interface used by `crate::ckpt`:
//! [`write_to`], [`decode`], [`looks_like`], [`BpError`].

use crate::pytree::Pytree;
use std::io::Write;

/// Why a BrainPy file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BpError {
    /// Placeholder until the codec lands.
    #[error("the BrainPy codec is not built yet")]
    NotBuilt,
}

/// Writes `tree` in BrainPy's format to `w`.
pub fn write_to(tree: &Pytree, w: &mut dyn Write) -> Result<(), BpError> {
    let _ = (tree, w);
    Err(BpError::NotBuilt)
}

/// Decodes a whole BrainPy file.
pub fn decode(bytes: &[u8]) -> Result<Pytree, BpError> {
    let _ = bytes;
    Err(BpError::NotBuilt)
}

/// True when `prefix` (the first bytes of a file) may start a BrainPy file.
pub fn looks_like(prefix: &[u8]) -> bool {
    let _ = prefix;
    false
}
