//! BrainPy's checkpoint format (Flax-derived msgpack), read and written byte for byte.
//!
//! A `.bp` file written by `bp.checkpoints.save_pytree` is exactly one msgpack object, with no
//! magic number, header, version or checksum. This module reads any such file into a [`Pytree`]
//! and writes a [`Pytree`] exactly as BrainPy would write the same Python tree:
//!
//! | [`Pytree`] | msgpack |
//! | --- | --- |
//! | `Map` | map with string keys, in insertion order (minimal fixmap/map16/map32 header) |
//! | `List` | map keyed `"0"`, `"1"`, ... (BrainPy stores lists and tuples so; they read back as maps) |
//! | `Tensor` | ext type 1, payload `[shape, dtype name, raw little-endian C-order bytes]` |
//! | `Scalar` (numpy scalar) | ext type 3, same payload with shape `[]` |
//! | `Complex` (Python complex) | ext type 2, payload `[re, im]` as two float64 |
//! | `Int` / `UInt` | the smallest msgpack int form |
//! | `Float` | float64 (`cb`), never float32 |
//! | `Bool`, `Str`, `Bytes`, `None` | `c2`/`c3`, minimal str, minimal bin, `c0` |
//!
//! Ext headers use the fixext forms for payloads of 1, 2, 4, 8 and 16 bytes, as msgpack-python
//! does. Arrays larger than [`MAX_CHUNK_SIZE`] bytes (strictly) are written as BrainPy's chunked
//! map `{"__msgpack_chunked_array__": true, "shape": {...}, "chunks": {...}}`; chunked arrays are
//! read back at any chunk size.
//!
//! # Reading
//!
//! [`decode`] accepts any valid msgpack BrainPy's own loader accepts: float32 values (read as
//! a float, as Python does), msgpack arrays (read as [`Pytree::List`]), non-minimal headers, `str`
//! or `bin` dtype names. It converts nothing else. Every declared length is checked against the
//! bytes that remain before anything is allocated, so hostile input gets a typed [`BpError`]
//! naming the byte offset and tree path, never a panic or an allocation beyond the input's size.
//! Nesting deeper than [`MAX_DEPTH`] is refused. What BrainPy's loader would also refuse
//! (truncated input, extra data, invalid UTF-8, non-string map keys) is an error here; in
//! addition this reader refuses duplicate map keys, ext types other than 1, 2 and 3, dtype names
//! outside [`DType`](crate::DType) (e.g. `float8_e4m3fn`), and bool arrays holding bytes other
//! than 0 and 1, rather than guess.
//!
//! # No integrity check
//!
//! BrainPy's format has no checksum: **a flipped byte inside array data cannot be detected**,
//! and such a file loads with a wrong value (as it does in BrainPy). Use the native checkpoint
//! format (`crate::ckpt`), which checksums every tensor, for files you must trust; use this one
//! to exchange files with BrainPy.

mod read;
mod write;

use crate::dtype::DType;
use crate::pytree::Pytree;
use std::io::Write;

pub use write::{to_vec, to_vec_with, write_to_with, WriteOptions};

/// BrainPy's chunking threshold: arrays of more than this many bytes are written in chunks of
/// at most this many bytes (`MAX_CHUNK_SIZE = 2**30` in braintools/Flax).
pub const MAX_CHUNK_SIZE: usize = 1 << 30;

/// The deepest nesting of maps and lists (and msgpack arrays) read or written.
pub const MAX_DEPTH: usize = 512;

/// Why a BrainPy file could not be read or written.
///
/// `offset` is the byte offset in the file of the item that is wrong; `path` is the slash-joined
/// tree path of the value being read (`/` for the root).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BpError {
    /// The input ends before an item it declares.
    #[error("at byte {offset} ({path}): input ends early: {what} needs {needed} bytes, {available} remain")]
    Truncated {
        /// Offset of the item.
        offset: usize,
        /// Tree path.
        path: String,
        /// What was being read.
        what: &'static str,
        /// Bytes the item declares.
        needed: u64,
        /// Bytes left in the input (or the enclosing ext payload).
        available: usize,
    },
    /// Bytes remain after the top-level object (or after an ext payload's inner object).
    #[error("at byte {offset} ({path}): {extra} bytes of extra data after the {what}")]
    ExtraData {
        /// Offset of the first extra byte.
        offset: usize,
        /// Tree path.
        path: String,
        /// Count of extra bytes.
        extra: usize,
        /// What ended there (`top-level object`, `ndarray payload`, ...).
        what: &'static str,
    },
    /// The byte 0xc1, which msgpack never uses.
    #[error("at byte {offset} ({path}): invalid msgpack marker {byte:#04x}")]
    InvalidMarker {
        /// Offset.
        offset: usize,
        /// Tree path.
        path: String,
        /// The byte.
        byte: u8,
    },
    /// A string is not valid UTF-8.
    #[error("at byte {offset} ({path}): string is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the string's header.
        offset: usize,
        /// Tree path.
        path: String,
    },
    /// A map key is not a string.
    #[error("at byte {offset} ({path}): map key is a {found}, not a string")]
    NonStringKey {
        /// Offset of the key.
        offset: usize,
        /// Tree path of the map.
        path: String,
        /// The key's msgpack kind.
        found: &'static str,
    },
    /// A map holds the same key twice.
    #[error("at byte {offset} ({path}): duplicate map key {key:?}")]
    DuplicateKey {
        /// Offset of the second occurrence.
        offset: usize,
        /// Tree path of the map.
        path: String,
        /// The key.
        key: String,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("at byte {offset} ({path}): nesting deeper than {limit} levels")]
    TooDeep {
        /// Offset of the container that is one too deep (0 when writing).
        offset: usize,
        /// Tree path.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// An ext type other than 1 (ndarray), 2 (complex) and 3 (numpy scalar).
    #[error("at byte {offset} ({path}): unknown msgpack ext type {code}")]
    UnknownExt {
        /// Offset of the ext header.
        offset: usize,
        /// Tree path.
        path: String,
        /// The ext type code.
        code: i8,
    },
    /// An ext payload does not have the layout of its type.
    #[error("at byte {offset} ({path}): malformed {what} payload: {reason}")]
    BadPayload {
        /// Offset of the offending item.
        offset: usize,
        /// Tree path.
        path: String,
        /// `ndarray`, `numpy scalar` or `complex`.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A dtype name this crate does not support.
    #[error("at byte {offset} ({path}): unsupported dtype {name:?}")]
    UnknownDtype {
        /// Offset of the name.
        offset: usize,
        /// Tree path.
        path: String,
        /// The name as stored (lossily decoded).
        name: String,
    },
    /// A negative array dimension.
    #[error("at byte {offset} ({path}): negative array dimension {dim}")]
    NegativeDim {
        /// Offset of the dimension.
        offset: usize,
        /// Tree path.
        path: String,
        /// The value.
        dim: i64,
    },
    /// The array's shape times its item size overflows, or does not match the data length.
    #[error("at byte {offset} ({path}): {dtype} array of shape {shape:?} needs {} bytes, data has {found}", expected.map_or("more than 2^64".to_string(), |e| e.to_string()))]
    DataLength {
        /// Offset of the data.
        offset: usize,
        /// Tree path.
        path: String,
        /// The dtype.
        dtype: DType,
        /// The shape.
        shape: Vec<u64>,
        /// Bytes the shape needs (`None` when that exceeds 2^64 - 1).
        expected: Option<u64>,
        /// Bytes present.
        found: usize,
    },
    /// A bool array holds a byte other than 0 and 1.
    #[error("at byte {offset} ({path}): bool array element {index} is byte {byte:#04x}, not 0 or 1")]
    InvalidBool {
        /// Offset of the data.
        offset: usize,
        /// Tree path.
        path: String,
        /// Element index.
        index: usize,
        /// The byte.
        byte: u8,
    },
    /// A `__msgpack_chunked_array__` map is malformed.
    #[error("at byte {offset} ({path}): malformed chunked array: {reason}")]
    BadChunked {
        /// Offset of the map.
        offset: usize,
        /// Tree path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A [`Pytree::Scalar`] that is not 0-d cannot be written as a numpy scalar.
    #[error("at {path}: a numpy scalar must be 0-d, found shape {shape:?}")]
    ScalarNotZeroD {
        /// Tree path.
        path: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A string, bytes, map or ext payload longer than msgpack allows (2^32 - 1).
    #[error("at {path}: {what} of {len} bytes or entries exceeds msgpack's limit of 2^32 - 1")]
    TooLarge {
        /// Tree path.
        path: String,
        /// What it is.
        what: &'static str,
        /// Its length.
        len: u64,
    },
    /// Writing failed.
    #[error("writing the BrainPy file failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Internal result: errors boxed so that the recursive reader and writer keep small stack frames.
type R<T> = Result<T, Box<BpError>>;

fn err<T>(e: BpError) -> R<T> {
    Err(Box::new(e))
}

/// Writes `tree` in BrainPy's format to `w`, byte-identical to `bp.checkpoints.save_pytree` of
/// the same Python tree (arrays above [`MAX_CHUNK_SIZE`] bytes chunked as BrainPy does).
///
/// Writes go through an internal buffer; array data is written straight from the tensor.
pub fn write_to(tree: &Pytree, w: &mut dyn Write) -> Result<(), BpError> {
    write_to_with(tree, w, &WriteOptions::default())
}

/// Decodes a whole BrainPy file (see the [module docs](self) for what is accepted).
pub fn decode(bytes: &[u8]) -> Result<Pytree, BpError> {
    read::decode(bytes)
}

/// True when `prefix` (the first bytes of a file, any length) may start a BrainPy file of a
/// tree: a msgpack map whose first key is a string, or an ndarray/complex/numpy-scalar ext (a
/// bare array as the whole file). BrainPy files have no magic number, so this is a heuristic;
/// it is false for native CBOR, safetensors, zip (npz) and empty prefixes.
pub fn looks_like(prefix: &[u8]) -> bool {
    read::looks_like(prefix)
}
