//! Export and import of pytrees as safetensors and npz (issue 4).
//!
//! Interface used by `crate::ckpt`: `safetensors::{write_to, decode, looks_like}` and
//! `npz::{write_to, decode, looks_like}`, with errors [`InteropError`].

use crate::pytree::Pytree;
use std::io::Write;

/// Why a safetensors or npz file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    /// Placeholder until the codecs land.
    #[error("the safetensors/npz codecs are not built yet")]
    NotBuilt,
}

/// safetensors files.
pub mod safetensors {
    use super::*;
    /// Writes `tree` as safetensors (keys: tree paths joined by `/`).
    pub fn write_to(tree: &Pytree, w: &mut dyn Write) -> Result<(), InteropError> {
        let _ = (tree, w);
        Err(InteropError::NotBuilt)
    }
    /// Decodes a whole safetensors file.
    pub fn decode(bytes: &[u8]) -> Result<Pytree, InteropError> {
        let _ = bytes;
        Err(InteropError::NotBuilt)
    }
    /// True when `prefix` may start a safetensors file.
    pub fn looks_like(prefix: &[u8]) -> bool {
        let _ = prefix;
        false
    }
}

/// numpy `.npz` archives.
pub mod npz {
    use super::*;
    /// Writes the tensors of `tree` as an npz archive (keys: tree paths joined by `/`).
    pub fn write_to(tree: &Pytree, w: &mut dyn Write) -> Result<(), InteropError> {
        let _ = (tree, w);
        Err(InteropError::NotBuilt)
    }
    /// Decodes a whole npz archive.
    pub fn decode(bytes: &[u8]) -> Result<Pytree, InteropError> {
        let _ = bytes;
        Err(InteropError::NotBuilt)
    }
    /// True when `prefix` may start an npz archive (a zip file).
    pub fn looks_like(prefix: &[u8]) -> bool {
        let _ = prefix;
        false
    }
}
