//! safetensors files (the format of the `safetensors` crate and Python package).
//!
//! Tensors are stored under their tree paths joined by `/`; the tree's skeleton (order, empty
//! maps, lists, numpy scalars, non-tensor leaves) goes in the header's `__metadata__` under
//! [`SKELETON_KEY`](super::SKELETON_KEY). See the [parent module](super) for the encoding.

use super::{flatten, from_names, tensor_from, unflatten, InteropError, SKELETON_KEY};
use crate::dtype::DType;
use crate::pytree::Pytree;
use crate::tensor::Tensor;
use ::safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;

fn to_st(d: DType) -> Option<Dtype> {
    Some(match d {
        DType::Bool => Dtype::BOOL,
        DType::U8 => Dtype::U8,
        DType::U16 => Dtype::U16,
        DType::U32 => Dtype::U32,
        DType::U64 => Dtype::U64,
        DType::I8 => Dtype::I8,
        DType::I16 => Dtype::I16,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::C64 | DType::C128 => return None,
    })
}

fn from_st(d: Dtype) -> Option<DType> {
    DType::ALL.into_iter().find(|&x| to_st(x) == Some(d))
}

struct Borrowed<'t> {
    dtype: Dtype,
    tensor: &'t Tensor,
}

impl View for Borrowed<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.tensor.shape()
    }
    fn data(&self) -> Cow<'_, [u8]> {
        self.tensor.le_bytes()
    }
    fn data_len(&self) -> usize {
        self.tensor.nbytes()
    }
}

/// Writes `tree` as safetensors (keys: tree paths joined by `/`; skeleton in `__metadata__`).
pub fn write_to(tree: &Pytree, w: &mut dyn Write) -> Result<(), InteropError> {
    let flat = flatten(tree, &["__metadata__"])?;
    let mut views = Vec::with_capacity(flat.tensors.len());
    for (name, t) in &flat.tensors {
        let dtype = to_st(t.dtype()).ok_or_else(|| InteropError::UnsupportedDtype {
            path: name.clone(),
            dtype: t.dtype().name().into(),
            format: "safetensors",
        })?;
        views.push((name.as_str(), Borrowed { dtype, tensor: t }));
    }
    let meta = HashMap::from([(SKELETON_KEY.to_string(), flat.skeleton)]);
    let bytes =
        ::safetensors::serialize(views, Some(meta)).map_err(|e| InteropError::Safetensors(e.to_string()))?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// Decodes a whole safetensors file. With a brainstate skeleton the tree comes back as written;
/// without one, as nested maps from the `/`-separated names in file order.
pub fn decode(bytes: &[u8]) -> Result<Pytree, InteropError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| InteropError::Safetensors(e.to_string()))?;
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| InteropError::Safetensors(e.to_string()))?;
    let mut named = Vec::with_capacity(st.len());
    for name in meta.offset_keys() {
        let view = st
            .tensor(&name)
            .map_err(|e| InteropError::Safetensors(e.to_string()))?;
        let dtype = from_st(view.dtype()).ok_or_else(|| InteropError::UnsupportedDtype {
            path: name.clone(),
            dtype: view.dtype().to_string(),
            format: "safetensors",
        })?;
        let t = tensor_from(&name, dtype, view.shape(), view.data())?;
        named.push((name, t));
    }
    match meta.metadata().as_ref().and_then(|m| m.get(SKELETON_KEY)) {
        Some(skeleton) => unflatten(skeleton, named.into_iter().collect()),
        None => from_names(named),
    }
}

/// True when `prefix` may start a safetensors file: an 8-byte little-endian header length below
/// the format's 100 MB limit, then `{`.
pub fn looks_like(prefix: &[u8]) -> bool {
    match prefix.get(..9) {
        Some(p) => {
            let n = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
            (2..100_000_000).contains(&n) && p[8] == b'{'
        }
        None => false,
    }
}
