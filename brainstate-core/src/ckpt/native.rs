//! The native checkpoint format, version 1 (`docs/FORMAT.md` describes it byte by byte).
//!
//! A file is a CBOR sequence (RFC 8742): a self-described (tag 55799) header map, zero-filled
//! byte-string padding, one byte string per tensor (under its RFC 8746 typed-array tag where one
//! exists) whose payload starts on an `align`-byte boundary, and a trailer map. Tensor bytes are
//! written and read in bulk, never element by element.

use super::error::{FormatError, Item};
use crate::dtype::DType;
use crate::pytree::{Pytree, PytreeMap};
use crate::tensor::{checked_nbytes, Tensor, TensorLayout};
use ciborium_ll::{Decoder, Encoder, Header};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The magic: tag 55799 (self-described CBOR), `d9 d9 f7`.
pub const MAGIC: [u8; 3] = [0xd9, 0xd9, 0xf7];
/// The format id in the header (`fmt`) and the trailer (`end`).
pub const FORMAT_ID: &str = "brainstate-ckpt";
/// The format version this library writes: `[major, minor]`.
pub const VERSION: [u64; 2] = [1, 0];
/// The default payload alignment in bytes.
pub const DEFAULT_ALIGN: usize = 64;
/// The deepest nesting of containers and tags the reader accepts (the writer refuses deeper trees).
pub const MAX_DEPTH: usize = 64;
/// Containers never preallocate more entries than this from a declared length: memory grows
/// only with items actually present in the input.
const PREALLOC_CAP: usize = 1024;
/// The same for the tree's maps and lists, whose items ([`Pytree`]) are larger.
const TREE_PREALLOC_CAP: usize = 256;
/// The most axes a tensor may have.
pub const MAX_NDIM: usize = 64;

/// Tag of a tensor reference in the tree: content is the tensor's index.
pub const TAG_TENSOR: u64 = 46000;
/// Tag of a numpy-scalar reference in the tree: content is the index of a 0-d tensor.
pub const TAG_SCALAR: u64 = 46001;
/// Tag of a Python complex: content is `[re, im]`.
pub const TAG_COMPLEX: u64 = 46002;
/// Tag of an unsigned int at most `i64::MAX` that the tree holds as [`Pytree::UInt`].
pub const TAG_UINT: u64 = 46003;

/// The RFC 8746 typed-array tag for a dtype's little-endian byte string, if one exists.
pub fn typed_array_tag(d: DType) -> Option<u8> {
    Some(match d {
        DType::U8 => 64,
        DType::U16 => 69,
        DType::U32 => 70,
        DType::U64 => 71,
        DType::I8 => 72,
        DType::I16 => 77,
        DType::I32 => 78,
        DType::I64 => 79,
        DType::F16 => 84,
        DType::F32 => 85,
        DType::F64 => 86,
        DType::Bool | DType::BF16 | DType::C64 | DType::C128 => return None,
    })
}

/// Length of a CBOR head whose argument is `n`.
fn head_len(n: u64) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Writes a CBOR head (major type `major`, argument `n`) in preferred (shortest) form.
fn push_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match head_len(n) {
        1 => out.push(m | n as u8),
        2 => out.extend_from_slice(&[m | 24, n as u8]),
        3 => {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        5 => {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Appends padding items (zero-filled byte strings) of exactly `g` bytes in total: one item when
/// a byte string of that total size exists, otherwise an empty byte string (`40`) and the rest.
pub fn push_padding(out: &mut Vec<u8>, mut g: usize) {
    while g > 0 {
        let single = [1usize, 2, 3, 5, 9]
            .into_iter()
            .find(|&h| g >= h && head_len((g - h) as u64) == h);
        match single {
            Some(h) => {
                push_head(out, 2, (g - h) as u64);
                out.resize(out.len() + g - h, 0);
                return;
            }
            None => {
                out.push(0x40);
                g -= 1;
            }
        }
    }
}

/// Bytes of the tag and byte-string head in front of a payload of `len` bytes.
fn payload_head(d: DType, len: u64, out: &mut Vec<u8>) {
    if let Some(tag) = typed_array_tag(d) {
        out.extend_from_slice(&[0xd8, tag]);
    }
    push_head(out, 2, len);
}

fn payload_head_len(d: DType, len: u64) -> u64 {
    (if typed_array_tag(d).is_some() { 2 } else { 0 }) + head_len(len) as u64
}

/// `x` rounded up to a multiple of `a`, a power of two (every caller has checked that).
fn align_up(x: u64, a: u64) -> Option<u64> {
    debug_assert!(a.is_power_of_two());
    // A mask, not a division: a division per tensor was a tenth of the layout check.
    x.checked_add(a - 1).map(|v| v & !(a - 1))
}

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    /// The dtype.
    pub dtype: DType,
    /// The shape.
    pub shape: Vec<usize>,
    /// Offset of the payload from the data base B.
    pub off: u64,
    /// Payload length in bytes.
    pub len: u64,
    /// CRC32C (Castagnoli) of the payload bytes.
    pub crc32c: u32,
}

/// Offsets of every payload relative to B, and the data length (B to the trailer), for the
/// given dtypes and byte lengths. The same function serves the writer and the reader, so the
/// header and the byte stream cannot disagree.
fn layout(items: impl Iterator<Item = (DType, u64)>, align: u64) -> Option<(Vec<u64>, u64)> {
    let mut cur = 0u64;
    let mut offs = Vec::new();
    for (d, len) in items {
        let off = align_up(cur.checked_add(payload_head_len(d, len))?, align)?;
        offs.push(off);
        cur = off.checked_add(len)?;
    }
    Some((offs, cur))
}

/// Meta-data a writer may store in the header (`meta`): a tree without tensors.
pub type Meta = Pytree;

// ---------------------------------------------------------------- writer

/// A tree ready to be written: the header bytes, the tensors in file order and the layout.
#[derive(Clone)]
pub struct Plan<'a> {
    header: Vec<u8>,
    tensors: Vec<&'a Tensor>,
    entries: Vec<PlanEntry>,
    align: u64,
    datalen: u64,
    tree_bytes: Vec<u8>,
    meta_bytes: Option<Vec<u8>>,
    /// Indices of tensors whose CRC32C is not known yet (see [`Plan::deferred`]); their entries
    /// hold [`CRC_PLACEHOLDER`].
    deferred: Vec<usize>,
}

/// A tensor's entry as the writer keeps it (the shape is read from the tensor when the header
/// is encoded, so planning allocates nothing per tensor).
#[derive(Clone, Copy, Debug)]
struct PlanEntry {
    dtype: DType,
    off: u64,
    len: u64,
    crc32c: u32,
}

/// When a save computes CRCs while it writes: trees of at least `min_total` payload bytes
/// leave the CRC32C of every tensor of at least `min_tensor` bytes to a second thread.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Overlap {
    /// Smallest total payload that overlaps.
    pub min_total: u64,
    /// Smallest tensor whose CRC is left to the second thread.
    pub min_tensor: usize,
    /// The CRC assumed while laying out the header (tests use a short one to force a re-layout).
    pub placeholder: u32,
}

impl Default for Overlap {
    fn default() -> Overlap {
        Overlap {
            min_total: 32 << 20,
            min_tensor: 1 << 20,
            placeholder: CRC_PLACEHOLDER,
        }
    }
}

/// The CRC a deferred entry holds until its real one is known: the largest, so the header
/// only shrinks (by at most 4 bytes per deferred tensor) when the real ones come in.
const CRC_PLACEHOLDER: u32 = u32::MAX;

/// Checks that a container at `offset`, nested `depth` deep, stays within [`MAX_DEPTH`].
fn nest(offset: u64, depth: usize) -> Result<(), FormatError> {
    if depth >= MAX_DEPTH {
        Err(FormatError::TooDeep {
            offset,
            limit: MAX_DEPTH,
        })
    } else {
        Ok(())
    }
}

/// The error for an indefinite-length item (the format allows only definite lengths).
fn indefinite(offset: u64) -> FormatError {
    FormatError::Syntax {
        offset,
        what: "indefinite-length items are not allowed".into(),
    }
}

/// The error for a CBOR simple value we do not use, or a stray break, at `offset`.
fn unexpected_item(offset: u64, h: Header) -> FormatError {
    let what = match h {
        Header::Simple(s) => format!("unsupported simple value {s}"),
        _ => "unexpected break".into(),
    };
    FormatError::Syntax { offset, what }
}

/// Why a tree cannot be written in the native format.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// Containers are nested deeper than readers accept.
    #[error("the tree is nested deeper than {MAX_DEPTH} levels at {path}")]
    TooDeep {
        /// Path of the too-deep value.
        path: String,
    },
    /// A numpy scalar leaf is not 0-d.
    #[error("the numpy scalar at {path} has shape {shape:?}; scalars are 0-d")]
    ScalarNotZeroD {
        /// Path of the leaf.
        path: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A tensor has more axes than readers accept.
    #[error("the tensor at {path} has {ndim} axes; at most {MAX_NDIM} are supported")]
    TooManyAxes {
        /// Path of the leaf.
        path: String,
        /// Its axis count.
        ndim: usize,
    },
    /// Meta-data contains a tensor.
    #[error("meta-data may not contain tensors (at {path})")]
    TensorInMeta {
        /// Path in the meta tree.
        path: String,
    },
    /// The alignment is not a power of two between 8 and 65536.
    #[error("alignment {0} is not a power of two between 8 and 65536")]
    BadAlign(usize),
}

impl<'a> Plan<'a> {
    /// Plans the file for `tree` (CRC32C of every tensor computed here, on several threads for
    /// large trees), with optional `meta` and the given alignment.
    pub fn new(tree: &'a Pytree, meta: Option<&Meta>, align: usize) -> Result<Plan<'a>, EncodeError> {
        Plan::build(tree, meta, align, None)
    }

    /// Like [`Plan::new`], but when the tree is large enough (`overlap`) the CRC32C of its large
    /// tensors is left to [`Plan::write_overlapped`], which computes it while writing.
    #[doc(hidden)]
    pub fn deferred(
        tree: &'a Pytree,
        meta: Option<&Meta>,
        align: usize,
        overlap: Overlap,
    ) -> Result<Plan<'a>, EncodeError> {
        Plan::build(tree, meta, align, Some(overlap))
    }

    fn build(
        tree: &'a Pytree,
        meta: Option<&Meta>,
        align: usize,
        overlap: Option<Overlap>,
    ) -> Result<Plan<'a>, EncodeError> {
        if !(8..=65536).contains(&align) || !align.is_power_of_two() {
            return Err(EncodeError::BadAlign(align));
        }
        let mut tensors = Vec::new();
        let mut tree_bytes = Vec::new();
        encode_tree(
            tree,
            &mut tree_bytes,
            &mut Some(&mut tensors),
            &mut String::new(),
            0,
        )?;
        let meta_bytes = match meta {
            Some(m) => {
                let mut v = Vec::new();
                encode_tree(m, &mut v, &mut None, &mut String::new(), 0)?;
                Some(v)
            }
            None => None,
        };
        let total: u64 = tensors.iter().map(|t| t.nbytes() as u64).sum();
        let two_cores = super::cores() > 1;
        let (crcs, deferred) = match overlap {
            Some(o) if total >= o.min_total && two_cores => {
                let mut deferred = Vec::new();
                let crcs = tensors
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        if t.nbytes() >= o.min_tensor {
                            deferred.push(i);
                            o.placeholder
                        } else {
                            crc32c::crc32c(&t.le_bytes())
                        }
                    })
                    .collect();
                (crcs, deferred)
            }
            _ => (crc_all(&tensors), Vec::new()),
        };
        let (offs, datalen) = layout(
            tensors.iter().map(|t| (t.dtype(), t.nbytes() as u64)),
            align as u64,
        )
        .expect("in-memory sizes fit u64");
        let entries: Vec<PlanEntry> = tensors
            .iter()
            .zip(offs)
            .zip(crcs)
            .map(|((t, off), crc32c)| PlanEntry {
                dtype: t.dtype(),
                off,
                len: t.nbytes() as u64,
                crc32c,
            })
            .collect();
        let header = encode_header(
            &entries,
            &tensors,
            &tree_bytes,
            meta_bytes.as_deref(),
            align as u64,
        );
        Ok(Plan {
            header,
            tensors,
            entries,
            align: align as u64,
            datalen,
            tree_bytes,
            meta_bytes,
            deferred,
        })
    }

    /// True when some CRCs are left to [`Plan::write_overlapped`].
    #[doc(hidden)]
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// The plan with the deferred CRCs filled in (`crcs` in the order of the deferred tensors).
    #[doc(hidden)]
    pub fn with_crcs(mut self, crcs: &[u32]) -> Plan<'a> {
        for (&i, &c) in self.deferred.iter().zip(crcs) {
            self.entries[i].crc32c = c;
        }
        self.deferred.clear();
        self.header = encode_header(
            &self.entries,
            &self.tensors,
            &self.tree_bytes,
            self.meta_bytes.as_deref(),
            self.align,
        );
        self
    }

    fn data_base(&self) -> u64 {
        align_up(self.header.len() as u64, self.align).expect("small")
    }

    /// The total file size.
    pub fn file_len(&self) -> u64 {
        self.data_base() + self.datalen + self.trailer().len() as u64
    }

    fn trailer(&self) -> Vec<u8> {
        encode_trailer(
            self.entries.len() as u64,
            self.datalen,
            crc32c::crc32c(&self.header),
        )
    }

    /// Writes the whole file to `w`. Small items go through a buffer; payloads are written
    /// straight from the tensors' memory.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        assert!(
            self.deferred.is_empty(),
            "write_to needs every CRC; use write_overlapped"
        );
        w.write_all(&self.header)?;
        let hlen = self.header.len() as u64;
        let mut small = Vec::with_capacity(256);
        push_padding(&mut small, (self.data_base() - hlen) as usize);
        self.write_data(w, small)?;
        w.write_all(&self.trailer())
    }

    /// Writes the bytes from B to the trailer (exclusive), after the bytes already in `small`.
    fn write_data(&self, w: &mut dyn Write, mut small: Vec<u8>) -> io::Result<()> {
        let mut cur = 0u64;
        for (t, e) in self.tensors.iter().zip(&self.entries) {
            let h = payload_head_len(e.dtype, e.len);
            push_padding(&mut small, (e.off - h - cur) as usize);
            payload_head(e.dtype, e.len, &mut small);
            let bytes = t.le_bytes();
            if bytes.len() < 4096 {
                small.extend_from_slice(&bytes);
            } else {
                w.write_all(&small)?;
                small.clear();
                w.write_all(&bytes)?;
            }
            if small.len() >= 1 << 16 {
                w.write_all(&small)?;
                small.clear();
            }
            cur = e.off + e.len;
        }
        w.write_all(&small)
    }

    /// Writes the whole file to `w` while a second thread computes the deferred CRCs: zeros in
    /// place of the header, the payloads, the trailer, then the header at offset 0. Returns
    /// `Ok(Err(crcs))` when the real CRCs make the header end in another alignment block than
    /// the placeholders did (then the payloads sit at the wrong offsets: write the file again
    /// from [`Plan::with_crcs`]). The bytes are the same as [`Plan::write_to`] gives. A storage
    /// without positional writes gets the CRCs first and the file in order (the header's final
    /// size is known then, so no second pass is ever needed).
    #[doc(hidden)]
    pub fn write_overlapped(&self, w: &mut super::TempFile) -> io::Result<Result<(), Vec<u32>>> {
        if !w.supports_write_at() {
            // Sequential writes only: the CRCs first (on several threads), then the file in order.
            let threads = super::cores().min(8);
            let crcs: Vec<u32> = self
                .deferred
                .iter()
                .map(|&i| parallel_crc(&self.tensors[i].le_bytes(), threads))
                .collect();
            return self.clone().with_crcs(&crcs).write_to(w).map(Ok);
        }
        let base = self.data_base();
        // A hint: a failure here shows up in the writes.
        let trailer_max = encode_trailer(self.entries.len() as u64, self.datalen, u32::MAX).len();
        let _ = w.allocate(base + self.datalen + trailer_max as u64);
        let small = vec![0u8; base as usize];
        let (written, crcs) = std::thread::scope(|s| {
            let crc = s.spawn(|| {
                self.deferred
                    .iter()
                    .map(|&i| crc32c::crc32c(&self.tensors[i].le_bytes()))
                    .collect::<Vec<u32>>()
            });
            let written = self.write_data(w, small);
            (written, crc.join())
        });
        written?;
        let crcs = crcs.map_err(|_| io::Error::other("the CRC32C thread panicked"))?;
        let done = self.clone().with_crcs(&crcs);
        if done.data_base() != base {
            return Ok(Err(crcs));
        }
        w.write_all(&done.trailer())?;
        let mut header = done.header;
        let hlen = header.len() as u64;
        push_padding(&mut header, (base - hlen) as usize);
        w.write_all_at(&header, 0)?;
        Ok(Ok(()))
    }

    /// The whole file as bytes (for tests and in-memory use).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.file_len() as usize);
        self.write_to(&mut v).expect("writing to a Vec cannot fail");
        v
    }
}

/// CRC32C of every tensor; large totals are split over the available cores.
fn crc_all(tensors: &[&Tensor]) -> Vec<u32> {
    let total: usize = tensors.iter().map(|t| t.nbytes()).sum();
    let threads = super::cores().min(8);
    if total < (32 << 20) || threads == 1 {
        let mut out = Vec::with_capacity(tensors.len());
        let mut chunks = tensors.chunks_exact(3);
        for t in &mut chunks {
            out.extend(crc32c_x3(&t[0].le_bytes(), &t[1].le_bytes(), &t[2].le_bytes()));
        }
        out.extend(chunks.remainder().iter().map(|t| crc32c::crc32c(&t.le_bytes())));
        return out;
    }
    tensors
        .iter()
        .map(|t| {
            let b = t.le_bytes();
            if b.len() < (8 << 20) {
                crc32c::crc32c(&b)
            } else {
                parallel_crc(&b, threads)
            }
        })
        .collect()
}

/// CRC32C of three buffers at once: below 768 bytes the `crc32c` crate runs one dependency
/// chain of 3-cycle `crc32` instructions, so three small payloads interleaved go about three
/// times as fast. Equal to three `crc32c::crc32c` calls.
pub(crate) fn crc32c_x3(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE 4.2 (checked just above).
        let (raw, k) = unsafe { crc_x3_sse42(a, b, c) };
        // `raw` is the un-inverted state after `k` bytes; crc32c_append continues from the
        // finished (inverted) CRC of those bytes (skipped when nothing is left, the usual
        // case for payloads of equal lengths that are multiples of 8).
        let rest = |raw: u32, s: &[u8]| match &s[k..] {
            [] => !raw,
            tail => crc32c::crc32c_append(!raw, tail),
        };
        return [rest(raw[0], a), rest(raw[1], b), rest(raw[2], c)];
    }
    [crc32c::crc32c(a), crc32c::crc32c(b), crc32c::crc32c(c)]
}

/// The three CRC states (not inverted) over the first `k` bytes of each buffer, `k` the
/// shortest length rounded down to 8, and `k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc_x3_sse42(a: &[u8], b: &[u8], c: &[u8]) -> ([u32; 3], usize) {
    use std::arch::x86_64::_mm_crc32_u64;
    let k = a.len().min(b.len()).min(c.len()) / 8 * 8;
    let (mut x, mut y, mut z) = (u32::MAX as u64, u32::MAX as u64, u32::MAX as u64);
    fn words(s: &[u8], k: usize) -> impl Iterator<Item = u64> + '_ {
        s[..k]
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
    }
    for ((wa, wb), wc) in words(a, k).zip(words(b, k)).zip(words(c, k)) {
        x = _mm_crc32_u64(x, wa);
        y = _mm_crc32_u64(y, wb);
        z = _mm_crc32_u64(z, wc);
    }
    ([x as u32, y as u32, z as u32], k)
}

/// CRC32C of `b` computed in `threads` pieces and combined.
pub(crate) fn parallel_crc(b: &[u8], threads: usize) -> u32 {
    let chunk = b.len().div_ceil(threads);
    let parts: Vec<(u32, usize)> = std::thread::scope(|s| {
        let hs: Vec<_> = b
            .chunks(chunk)
            .map(|c| s.spawn(move || (crc32c::crc32c(c), c.len())))
            .collect();
        hs.into_iter().map(|h| h.join().expect("crc thread")).collect()
    });
    parts
        .into_iter()
        .fold(0u32, |acc, (c, len)| crc32c::crc32c_combine(acc, c, len))
}

fn enc(out: &mut Vec<u8>) -> Encoder<&mut Vec<u8>> {
    Encoder::from(out)
}

fn push_text(out: &mut Vec<u8>, s: &str) {
    push_head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn encode_tree<'a>(
    t: &'a Pytree,
    out: &mut Vec<u8>,
    tensors: &mut Option<&mut Vec<&'a Tensor>>,
    path: &mut String,
    depth: usize,
) -> Result<(), EncodeError> {
    fn leaf_path(p: &str) -> String {
        if p.is_empty() {
            "/".into()
        } else {
            p.to_string()
        }
    }
    match t {
        Pytree::Map(_) | Pytree::List(_) if depth >= MAX_DEPTH => {
            return Err(EncodeError::TooDeep {
                path: leaf_path(path),
            })
        }
        Pytree::Map(m) => {
            push_head(out, 5, m.len() as u64);
            for (k, v) in m {
                push_text(out, k);
                let n = path.len();
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(k);
                encode_tree(v, out, tensors, path, depth + 1)?;
                path.truncate(n);
            }
        }
        Pytree::List(l) => {
            push_head(out, 4, l.len() as u64);
            for (i, v) in l.iter().enumerate() {
                let n = path.len();
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(&i.to_string());
                encode_tree(v, out, tensors, path, depth + 1)?;
                path.truncate(n);
            }
        }
        Pytree::Tensor(x) | Pytree::Scalar(x) => {
            let Some(list) = tensors.as_deref_mut() else {
                return Err(EncodeError::TensorInMeta {
                    path: leaf_path(path),
                });
            };
            let scalar = matches!(t, Pytree::Scalar(_));
            if scalar && x.ndim() != 0 {
                return Err(EncodeError::ScalarNotZeroD {
                    path: leaf_path(path),
                    shape: x.shape().to_vec(),
                });
            }
            if x.ndim() > MAX_NDIM {
                return Err(EncodeError::TooManyAxes {
                    path: leaf_path(path),
                    ndim: x.ndim(),
                });
            }
            push_head(out, 6, if scalar { TAG_SCALAR } else { TAG_TENSOR });
            push_head(out, 0, list.len() as u64);
            list.push(x);
        }
        Pytree::Int(i) => {
            if *i >= 0 {
                push_head(out, 0, *i as u64);
            } else {
                push_head(out, 1, !(*i as u64));
            }
        }
        Pytree::UInt(u) => {
            if *u <= i64::MAX as u64 {
                push_head(out, 6, TAG_UINT);
            }
            push_head(out, 0, *u);
        }
        Pytree::Float(x) => {
            enc(out).push(Header::Float(*x)).expect("Vec write");
        }
        Pytree::Complex(c) => {
            push_head(out, 6, TAG_COMPLEX);
            push_head(out, 4, 2);
            enc(out).push(Header::Float(c.re)).expect("Vec write");
            enc(out).push(Header::Float(c.im)).expect("Vec write");
        }
        Pytree::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Pytree::Str(s) => push_text(out, s),
        Pytree::Bytes(b) => {
            push_head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Pytree::None => out.push(0xf6),
    }
    Ok(())
}

fn encode_header(
    entries: &[PlanEntry],
    tensors: &[&Tensor],
    tree: &[u8],
    meta: Option<&[u8]>,
    align: u64,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(64 + tree.len() + entries.len() * 48);
    h.extend_from_slice(&MAGIC);
    // Keys in RFC 8949 section 4.2.1 order (bytewise order of their encodings).
    push_head(&mut h, 5, if meta.is_some() { 6 } else { 5 });
    push_text(&mut h, "fmt");
    push_text(&mut h, FORMAT_ID);
    push_text(&mut h, "ver");
    push_head(&mut h, 4, 2);
    push_head(&mut h, 0, VERSION[0]);
    push_head(&mut h, 0, VERSION[1]);
    if let Some(m) = meta {
        push_text(&mut h, "meta");
        h.extend_from_slice(m);
    }
    push_text(&mut h, "tree");
    h.extend_from_slice(tree);
    push_text(&mut h, "align");
    push_head(&mut h, 0, align);
    push_text(&mut h, "tensors");
    push_head(&mut h, 4, entries.len() as u64);
    for (e, t) in entries.iter().zip(tensors) {
        push_head(&mut h, 5, 5);
        push_text(&mut h, "len");
        push_head(&mut h, 0, e.len);
        push_text(&mut h, "off");
        push_head(&mut h, 0, e.off);
        push_text(&mut h, "dtype");
        push_text(&mut h, e.dtype.name());
        push_text(&mut h, "shape");
        push_head(&mut h, 4, t.ndim() as u64);
        for &d in t.shape() {
            push_head(&mut h, 0, d as u64);
        }
        push_text(&mut h, "crc32c");
        push_head(&mut h, 0, e.crc32c as u64);
    }
    h
}

fn encode_trailer(n: u64, datalen: u64, hcrc: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(48);
    push_head(&mut t, 5, 4);
    push_text(&mut t, "n");
    push_head(&mut t, 0, n);
    push_text(&mut t, "end");
    push_text(&mut t, FORMAT_ID);
    push_text(&mut t, "hcrc");
    push_head(&mut t, 0, hcrc as u64);
    push_text(&mut t, "datalen");
    push_head(&mut t, 0, datalen);
    t
}

// ---------------------------------------------------------------- reader

/// A decoded CBOR value of the header (only what the format uses).
#[derive(Debug, Clone)]
enum Val {
    Uint(u64),
    Nint(u64),
    Float(f64),
    Bool(bool),
    Null,
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Val>),
    /// Entries in file order; duplicate keys are rejected while parsing.
    Map(Vec<(String, Val)>),
    Tag(u64, Box<Val>),
    /// A tensor (false) or numpy-scalar (true) reference: tag 46000/46001 with an index.
    Ref(u64, bool),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Uint(_) => "unsigned int",
            Val::Nint(_) => "negative int",
            Val::Float(_) => "float",
            Val::Bool(_) => "bool",
            Val::Null => "null",
            Val::Bytes(_) => "byte string",
            Val::Text(_) => "text",
            Val::Array(_) => "array",
            Val::Map(_) => "map",
            Val::Tag(..) | Val::Ref(..) => "tag",
        }
    }
}

/// Parses CBOR items from a slice with ciborium-ll heads, bounding nesting and allocation:
/// every length is checked against the bytes that remain before anything is allocated.
#[derive(Clone)]
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Absolute file offset of the slice's first byte (for error messages).
    base: u64,
}

impl<'a> Parser<'a> {
    /// Skips the value of a key this version does not know (one a newer minor version added);
    /// returns true when the key was already seen in the same map (a duplicate).
    fn skip_unknown(&mut self, key: &'a str, seen: &mut Vec<&'a str>) -> Result<bool, FormatError> {
        self.value(1)?;
        if seen.contains(&key) {
            Ok(true)
        } else {
            seen.push(key);
            Ok(false)
        }
    }

    fn new(bytes: &'a [u8], base: u64) -> Parser<'a> {
        Parser { bytes, pos: 0, base }
    }

    fn pos(&self) -> usize {
        self.pos
    }

    fn at(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Reads one CBOR head. Small heads are decoded inline; floats go through ciborium-ll.
    #[inline]
    fn pull(&mut self) -> Result<Header, FormatError> {
        let at = self.at();
        let Some(&b) = self.bytes.get(self.pos) else {
            return Err(FormatError::Truncated { offset: at });
        };
        let (major, info) = (b >> 5, b & 0x1f);
        if major != 7 {
            let n = match info {
                0..=23 => {
                    self.pos += 1;
                    info as u64
                }
                24..=27 => {
                    let w = 1usize << (info - 24);
                    let Some(arg) = self.bytes.get(self.pos + 1..self.pos + 1 + w) else {
                        return Err(FormatError::Truncated { offset: at });
                    };
                    self.pos += 1 + w;
                    arg.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64)
                }
                31 if (2..=5).contains(&major) => return Err(indefinite(at)),
                _ => {
                    return Err(FormatError::Syntax {
                        offset: at,
                        what: "invalid CBOR head".into(),
                    })
                }
            };
            let len = || usize::try_from(n).map_err(|_| FormatError::Truncated { offset: at });
            return Ok(match major {
                0 => Header::Positive(n),
                1 => Header::Negative(n),
                2 => Header::Bytes(Some(len()?)),
                3 => Header::Text(Some(len()?)),
                4 => Header::Array(Some(len()?)),
                5 => Header::Map(Some(len()?)),
                _ => Header::Tag(n),
            });
        }
        let mut d = Decoder::from(&self.bytes[self.pos..]);
        let h = d.pull().map_err(|e| match e {
            ciborium_ll::Error::Io(_) => FormatError::Truncated { offset: at },
            ciborium_ll::Error::Syntax(_) => FormatError::Syntax {
                offset: at,
                what: "invalid CBOR head".into(),
            },
        })?;
        self.pos += d.offset();
        Ok(h)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() {
            return Err(FormatError::Truncated { offset: self.at() });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn text_of(&mut self, n: usize, at: u64) -> Result<&'a str, FormatError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| FormatError::Syntax {
            offset: at,
            what: "text is not valid UTF-8".into(),
        })
    }

    /// A map key of the header or a tensor entry: known keys are matched on their bytes (valid
    /// UTF-8 by construction); any other key is validated.
    fn known_key(&mut self, known: &[&'static str]) -> Result<&'a str, FormatError> {
        if let Some(&b) = self.bytes.get(self.pos) {
            let n = (b & 0x1f) as usize;
            if b >> 5 == 3 && n < 24 {
                if let Some(raw) = self.bytes.get(self.pos + 1..self.pos + 1 + n) {
                    if let Some(k) = known.iter().find(|k| k.as_bytes() == raw) {
                        self.pos += 1 + n;
                        return Ok(k);
                    }
                }
            }
        }
        self.key()
    }

    /// A map key: must be text.
    fn key(&mut self) -> Result<&'a str, FormatError> {
        let at = self.at();
        match self.pull()? {
            Header::Text(Some(n)) => self.text_of(n, at),
            Header::Text(None) => Err(indefinite(at)),
            other => Err(FormatError::NonTextKey {
                offset: at,
                found: head_kind(&other),
            }),
        }
    }

    /// Pulls one head and accepts it when `pick` maps it, else a `WrongType` naming `expected`.
    fn expect_head<T>(
        &mut self,
        item: Item,
        key: &'static str,
        expected: &'static str,
        pick: impl FnOnce(&Header) -> Option<T>,
    ) -> Result<T, FormatError> {
        let at = self.at();
        let head = self.pull()?;
        pick(&head).ok_or_else(|| FormatError::WrongType {
            offset: at,
            item,
            key,
            expected,
            found: head_kind(&head),
        })
    }

    fn map_head(&mut self, item: Item, key: &'static str) -> Result<usize, FormatError> {
        self.expect_head(item, key, "map", |h| match h {
            Header::Map(Some(n)) => Some(*n),
            _ => None,
        })
    }

    fn array_head(&mut self, item: Item, key: &'static str) -> Result<usize, FormatError> {
        self.expect_head(item, key, "array", |h| match h {
            Header::Array(Some(n)) => Some(*n),
            _ => None,
        })
    }

    fn uint(&mut self, item: Item, key: &'static str) -> Result<u64, FormatError> {
        self.expect_head(item, key, "unsigned int", |h| match h {
            Header::Positive(u) => Some(*u),
            _ => None,
        })
    }

    fn value(&mut self, depth: usize) -> Result<Val, FormatError> {
        let at = self.at();
        Ok(match self.pull()? {
            Header::Positive(u) => Val::Uint(u),
            Header::Negative(n) => Val::Nint(n),
            Header::Float(f) => Val::Float(f),
            Header::Simple(20) => Val::Bool(false),
            Header::Simple(21) => Val::Bool(true),
            Header::Simple(22) => Val::Null,
            h @ (Header::Simple(_) | Header::Break) => return Err(unexpected_item(at, h)),
            Header::Bytes(Some(n)) => Val::Bytes(self.take(n)?.to_vec()),
            Header::Text(Some(n)) => Val::Text(self.text_of(n, at)?.to_string()),
            Header::Array(Some(n)) => {
                nest(at, depth)?;
                let mut v = Vec::with_capacity(n.min(self.remaining()).min(PREALLOC_CAP));
                for _ in 0..n {
                    v.push(self.value(depth + 1)?);
                }
                Val::Array(v)
            }
            Header::Map(Some(n)) => {
                nest(at, depth)?;
                let mut v: Vec<(String, Val)> = Vec::with_capacity(n.min(self.remaining()).min(PREALLOC_CAP));
                let mut big: Vec<(&'a str, u64)> = Vec::new();
                for _ in 0..n {
                    let kat = self.at();
                    let key = self.key()?;
                    if n <= 16 {
                        if v.iter().any(|(k, _)| k == key) {
                            return Err(FormatError::DuplicateKey {
                                offset: kat,
                                key: key.to_string(),
                            });
                        }
                    } else {
                        big.push((key, kat));
                    }
                    let val = self.value(depth + 1)?;
                    v.push((key.to_string(), val));
                }
                if !big.is_empty() {
                    big.sort_unstable();
                    if let Some(w) = big.windows(2).find(|w| w[0].0 == w[1].0) {
                        return Err(FormatError::DuplicateKey {
                            offset: w[1].1,
                            key: w[1].0.to_string(),
                        });
                    }
                }
                Val::Map(v)
            }
            Header::Tag(t) => {
                nest(at, depth)?;
                // Tensor references are the bulk of a tree: keep them unboxed.
                if t == TAG_TENSOR || t == TAG_SCALAR {
                    let save = self.pos;
                    if let Ok(Header::Positive(i)) = self.pull() {
                        return Ok(Val::Ref(i, t == TAG_SCALAR));
                    }
                    self.pos = save;
                }
                Val::Tag(t, Box::new(self.value(depth + 1)?))
            }
            Header::Bytes(None) | Header::Text(None) | Header::Array(None) | Header::Map(None) => {
                return Err(indefinite(at))
            }
        })
    }

    /// A map key that is short text (the usual case) without the general head decoding; any
    /// other input goes to [`Parser::key`], which reports errors.
    #[inline]
    fn key_fast(&mut self) -> Result<&'a str, FormatError> {
        if let Some(&b) = self.bytes.get(self.pos) {
            if (0x60..0x78).contains(&b) {
                let n = (b & 0x1f) as usize;
                if let Some(raw) = self.bytes.get(self.pos + 1..self.pos + 1 + n) {
                    let k = if raw.is_ascii() {
                        // SAFETY: ASCII bytes are valid UTF-8.
                        Some(unsafe { std::str::from_utf8_unchecked(raw) })
                    } else {
                        std::str::from_utf8(raw).ok()
                    };
                    if let Some(k) = k {
                        self.pos += 1 + n;
                        return Ok(k);
                    }
                }
            }
        }
        self.key()
    }

    /// Skips one definite-length item nested at most [`MAX_DEPTH`] deep without building
    /// anything, or returns `None` (malformed, truncated or too deep; the position is then
    /// unspecified). Checks only the framing: [`Parser::tree`] checks the content.
    fn skip(&mut self, depth: usize) -> Option<()> {
        let b = *self.bytes.get(self.pos)?;
        let arg = match b & 0x1f {
            i @ 0..=23 => {
                self.pos += 1;
                i as u64
            }
            i @ 24..=27 => {
                let w = 1usize << (i - 24);
                let arg = self.bytes.get(self.pos + 1..self.pos + 1 + w)?;
                self.pos += 1 + w;
                arg.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64)
            }
            _ => return None,
        };
        match b >> 5 {
            2 | 3 => {
                let n = usize::try_from(arg).ok().filter(|&n| n <= self.remaining())?;
                self.pos += n;
            }
            major @ 4..=6 => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                // Each item takes at least one byte, so a hostile count ends at the input's end.
                if major == 5 {
                    for _ in 0..arg {
                        // The common entry: a short text key and a tensor reference.
                        match self.bytes.get(self.pos) {
                            Some(&k @ 0x60..=0x77) if ((k & 0x1f) as usize) < self.remaining() => {
                                self.pos += 1 + (k & 0x1f) as usize
                            }
                            _ => self.skip(depth + 1)?,
                        }
                        let len = match self.bytes.get(self.pos..self.pos + 4) {
                            Some(&[0xd9, 0xb3, 0xb0, h]) if depth + 1 < MAX_DEPTH => match h {
                                0..=23 => 4,
                                24..=26 => 4 + (1 << (h - 24)),
                                _ => 0,
                            },
                            _ => 0,
                        };
                        if len > 0 && len <= self.remaining() {
                            self.pos += len;
                        } else {
                            self.skip(depth + 1)?;
                        }
                    }
                } else {
                    for _ in 0..if major == 4 { arg } else { 1 } {
                        self.skip(depth + 1)?;
                    }
                }
            }
            _ => {}
        }
        Some(())
    }

    /// A tensor or numpy-scalar reference at `depth` written as the writer does (`d9 b3 b0` or
    /// `d9 b3 b1`, then an unsigned int): its index and whether it is a numpy scalar; or
    /// `None` with the position unchanged (the general path then parses the item and reports
    /// any error).
    #[inline]
    fn ref_fast(&mut self, depth: usize) -> Option<(u64, bool)> {
        if depth >= MAX_DEPTH {
            return None;
        }
        let b = self.bytes.get(self.pos..self.pos + 4)?;
        let scalar = match b[..3] {
            [0xd9, 0xb3, 0xb0] => false,
            [0xd9, 0xb3, 0xb1] => true,
            _ => return None,
        };
        let mut end = self.pos + 3;
        let i = uint_at(self.bytes, &mut end)?;
        self.pos = end;
        Some((i, scalar))
    }

    /// The tree skeleton, parsed straight into a [`Pytree`]: each tensor reference becomes an
    /// empty placeholder tensor and is recorded in `refs` (index, numpy scalar) in document
    /// order. Checks what [`Parser::value`] and [`build_tree`] check together.
    fn tree(&mut self, depth: usize, refs: &mut Refs) -> Result<Pytree, FormatError> {
        let at = self.at();
        Ok(match self.pull()? {
            Header::Positive(u) => i64::try_from(u).map_or(Pytree::UInt(u), Pytree::Int),
            Header::Negative(n) => {
                if n > i64::MAX as u64 {
                    return Err(FormatError::IntOutOfRange);
                }
                Pytree::Int(!(n as i64))
            }
            Header::Float(f) => Pytree::Float(f),
            Header::Simple(20) => Pytree::Bool(false),
            Header::Simple(21) => Pytree::Bool(true),
            Header::Simple(22) => Pytree::None,
            h @ (Header::Simple(_) | Header::Break) => return Err(unexpected_item(at, h)),
            Header::Bytes(Some(n)) => Pytree::Bytes(self.take(n)?.to_vec()),
            Header::Text(Some(n)) => Pytree::Str(self.text_of(n, at)?.to_string()),
            Header::Array(Some(n)) => {
                nest(at, depth)?;
                let mut v = Vec::with_capacity(n.min(self.remaining()).min(TREE_PREALLOC_CAP));
                for _ in 0..n {
                    v.push(match self.ref_fast(depth + 1) {
                        Some((i, scalar)) => refs.leaf(i, scalar),
                        None => self.tree(depth + 1, refs)?,
                    });
                }
                Pytree::List(v)
            }
            Header::Map(Some(n)) => {
                nest(at, depth)?;
                let cap = n.min(self.remaining() / 2).min(TREE_PREALLOC_CAP);
                let mut m = PytreeMap::with_capacity_and_hasher(cap, Default::default());
                for _ in 0..n {
                    let kat = self.at();
                    let key = self.key_fast()?;
                    let v = match self.ref_fast(depth + 1) {
                        Some((i, scalar)) => refs.leaf(i, scalar),
                        None => self.tree(depth + 1, refs)?,
                    };
                    // One probe of the hash table (the entry API probes twice: to look, then
                    // to insert). A duplicate key replaces the value, which is then an error.
                    if m.insert_full(key.to_string(), v).1.is_some() {
                        return Err(FormatError::DuplicateKey {
                            offset: kat,
                            key: key.to_string(),
                        });
                    }
                }
                Pytree::Map(m)
            }
            Header::Tag(t) => {
                nest(at, depth)?;
                let cat = self.at();
                // Tensor references are the bulk of a tree: take the expected uint directly.
                if matches!(t, TAG_TENSOR | TAG_SCALAR | TAG_UINT) {
                    if let Some(&b) = self.bytes.get(self.pos) {
                        if b >> 5 == 0 {
                            let Header::Positive(i) = self.pull()? else {
                                unreachable!("major type 0 is an unsigned int")
                            };
                            return Ok(match t {
                                TAG_TENSOR => refs.leaf(i, false),
                                TAG_SCALAR => refs.leaf(i, true),
                                _ => Pytree::UInt(i),
                            });
                        }
                    }
                }
                // Anything else: the content is parsed (and checked) first, as a value.
                let content = self.value(depth + 1)?;
                match (t, content) {
                    (TAG_TENSOR | TAG_SCALAR, _) => {
                        return Err(FormatError::BadTensorRef {
                            offset: cat,
                            index: u64::MAX,
                        })
                    }
                    (TAG_COMPLEX, Val::Array(a)) if a.len() == 2 => match (&a[0], &a[1]) {
                        (Val::Float(re), Val::Float(im)) => Pytree::Complex(crate::C128::new(*re, *im)),
                        _ => return Err(FormatError::UnknownTag { tag: TAG_COMPLEX }),
                    },
                    (t, _) => return Err(FormatError::UnknownTag { tag: t }),
                }
            }
            Header::Bytes(None) | Header::Text(None) | Header::Array(None) | Header::Map(None) => {
                return Err(indefinite(at))
            }
        })
    }

    /// The tensor entries of the header (`count` of them), their shapes appended to `dims`.
    /// An entry whose bytes repeat the previous one's except for the offset and CRC values (runs
    /// of tensors of one dtype and shape, as the writer makes them) is matched against those
    /// bytes and shares the previous entry's shape in `dims`.
    fn tensor_entries(&mut self, count: usize, dims: &mut Vec<usize>) -> Result<Vec<Entry>, FormatError> {
        let cap = count.min(self.remaining() / 32);
        let mut v: Vec<Entry> = Vec::with_capacity(cap);
        *dims = Vec::with_capacity(cap * 2);
        let mut prev: Option<EntryBytes> = None;
        for index in 0..count {
            if let (Some(pb), Some(pe)) = (&prev, v.last()) {
                if pb.fixed {
                    if let Some(e) = self.tensor_entry_fixed(pb, pe) {
                        v.push(e);
                        continue;
                    }
                }
                if let Some((e, b)) = self.tensor_entry_like(pb, pe) {
                    v.push(e);
                    prev = Some(b);
                    continue;
                }
            }
            match self.tensor_entry_fast(dims) {
                Some((e, b)) => {
                    v.push(e);
                    prev = Some(b);
                }
                None => {
                    v.push(self.tensor_entry(index, dims)?);
                    prev = None;
                }
            }
        }
        Ok(v)
    }

    /// An entry whose bytes equal those of `prev` (parsed as `pe`, its offset and CRC written
    /// as 4-byte ints, see [`EntryBytes::fixed`]) at every place but the 8 bytes of those two
    /// values: it parses as `pe` with them. Most entries of a large file, whose offsets and
    /// CRCs take 4 bytes; `None` (position unchanged) for any other.
    #[inline(always)]
    fn tensor_entry_fixed(&mut self, prev: &EntryBytes, pe: &Entry) -> Option<Entry> {
        let s = self.bytes;
        let p = &s[prev.start..prev.end];
        let (h, c) = (prev.off_at - prev.start, prev.crc_at - prev.start);
        let e = s.get(self.pos..self.pos + p.len())?;
        // The heads of the two values, then everything before, between and after them.
        if e[h] != 0x1a
            || e[c] != 0x1a
            || !same_bytes(&e[..h], &p[..h])
            || !same_bytes(&e[h + 5..c], &p[h + 5..c])
        {
            return None;
        }
        let off = u32::from_be_bytes(e[h + 1..h + 5].try_into().ok()?);
        let crc32c = u32::from_be_bytes(e[c + 1..c + 5].try_into().ok()?);
        self.pos += p.len();
        Some(Entry {
            off: off as u64,
            crc32c,
            ..*pe
        })
    }

    /// An entry whose bytes equal those of `prev` (parsed as `pe`) but for the values of `off`
    /// and `crc32c`: the same dtype, shape and length, so it parses as `pe` with those two
    /// values. `None` (position unchanged) for any other entry.
    #[inline(always)]
    fn tensor_entry_like(&mut self, prev: &EntryBytes, pe: &Entry) -> Option<(Entry, EntryBytes)> {
        let s = self.bytes;
        let start = self.pos;
        // `a5 63 "len" <len> 63 "off"`, then the offset.
        let head = &s[prev.start..prev.off_at];
        let off_at = start + head.len();
        if !same_bytes(s.get(start..off_at)?, head) {
            return None;
        }
        let mut i = off_at;
        let off = uint_at(s, &mut i)?;
        // `65 "dtype" <dtype> 65 "shape" <shape> 66 "crc32c"`, then the CRC.
        let mid = &s[prev.off_end..prev.crc_at];
        let off_end = i;
        let crc_at = off_end + mid.len();
        if !same_bytes(s.get(off_end..crc_at)?, mid) {
            return None;
        }
        i = crc_at;
        let crc32c = u32::try_from(uint_at(s, &mut i)?).ok()?;
        self.pos = i;
        let b = EntryBytes::new(s, start, off_at, off_end, crc_at, i);
        Some((Entry { off, crc32c, ..*pe }, b))
    }

    /// One tensor entry written exactly as the writer does (five keys in canonical order, short
    /// dtype and shape heads), and where its parts lie, or `None` with the position unchanged:
    /// the general path then parses the entry and reports any error. Accepts nothing the
    /// general path refuses.
    #[inline(always)]
    fn tensor_entry_fast(&mut self, dims: &mut Vec<usize>) -> Option<(Entry, EntryBytes)> {
        let start = self.pos;
        let ndims = dims.len();
        let e = self.tensor_entry_fast_inner(dims);
        if e.is_none() {
            self.pos = start;
            dims.truncate(ndims);
        }
        e
    }

    #[inline(always)]
    fn tensor_entry_fast_inner(&mut self, dims: &mut Vec<usize>) -> Option<(Entry, EntryBytes)> {
        // Parsed from a local slice and index, with fixed-width big-endian reads: the position
        // is written back once, at the end.
        let s = self.bytes.get(self.pos..)?;
        if s.get(..5)? != b"\xa5\x63len" {
            return None;
        }
        let mut i = 5;
        let len = uint_at(s, &mut i)?;
        if s.get(i..i + 4)? != b"\x63off" {
            return None;
        }
        i += 4;
        let off_at = i;
        let off = uint_at(s, &mut i)?;
        let off_end = i;
        if s.get(i..i + 6)? != b"\x65dtype" {
            return None;
        }
        let n = match *s.get(i + 6)? {
            b @ 0x60..=0x77 => (b & 0x1f) as usize,
            _ => return None,
        };
        i += 7;
        let dtype = dtype_from_bytes(s.get(i..i + n)?)?;
        i += n;
        if s.get(i..i + 6)? != b"\x65shape" {
            return None;
        }
        // At most 23 axes here (a one-byte head), below MAX_NDIM.
        let nd = match *s.get(i + 6)? {
            b @ 0x80..=0x97 => (b & 0x1f) as usize,
            _ => return None,
        };
        i += 7;
        let dims_at = dims.len();
        for _ in 0..nd {
            dims.push(usize::try_from(uint_at(s, &mut i)?).ok()?);
        }
        if s.get(i..i + 7)? != b"\x66crc32c" {
            return None;
        }
        i += 7;
        let crc_at = i;
        let crc32c = u32::try_from(uint_at(s, &mut i)?).ok()?;
        let start = self.pos;
        self.pos += i;
        let b = EntryBytes::new(
            self.bytes,
            start,
            start + off_at,
            start + off_end,
            start + crc_at,
            start + i,
        );
        let e = Entry {
            dtype,
            dims_at,
            ndim: nd,
            off,
            len,
            crc32c,
        };
        Some((e, b))
    }

    /// One tensor entry, parsed without building generic values; its shape is appended to `dims`.
    fn tensor_entry(&mut self, index: usize, dims: &mut Vec<usize>) -> Result<Entry, FormatError> {
        let item = Item::TensorEntry;
        let at = self.at();
        let n = self.map_head(item, "")?;
        let (mut len, mut off, mut dtype, mut shape, mut crc) = (None, None, None, None, None);
        let mut others: Vec<&str> = Vec::new();
        for _ in 0..n {
            let kat = self.at();
            let key = self.known_key(&["len", "off", "dtype", "shape", "crc32c"])?;
            let dup = match key {
                "len" => len.replace(self.uint(item, "len")?).is_some(),
                "off" => off.replace(self.uint(item, "off")?).is_some(),
                "crc32c" => crc.replace(self.uint(item, "crc32c")?).is_some(),
                "dtype" => {
                    let tat = self.at();
                    let name = match self.pull()? {
                        Header::Text(Some(n)) => self.text_of(n, tat)?,
                        other => {
                            return Err(FormatError::WrongType {
                                offset: tat,
                                item,
                                key: "dtype",
                                expected: "text",
                                found: head_kind(&other),
                            })
                        }
                    };
                    let d = DType::from_name(name).ok_or_else(|| FormatError::UnknownDtype {
                        index,
                        name: name.to_string(),
                    })?;
                    dtype.replace(d).is_some()
                }
                "shape" => {
                    let nd = self.array_head(item, "shape")?;
                    if nd > MAX_NDIM {
                        return Err(FormatError::BadShape { index });
                    }
                    let dims_at = dims.len();
                    for _ in 0..nd {
                        let d = self.uint(item, "shape")?;
                        dims.push(usize::try_from(d).map_err(|_| FormatError::BadShape { index })?);
                    }
                    shape.replace((dims_at, nd)).is_some()
                }
                other => self.skip_unknown(other, &mut others)?,
            };
            if dup {
                return Err(FormatError::DuplicateKey {
                    offset: kat,
                    key: key.to_string(),
                });
            }
        }
        let missing = |key| FormatError::MissingKey {
            offset: at,
            item,
            key,
        };
        let crc = crc.ok_or_else(|| missing("crc32c"))?;
        let dtype = dtype.ok_or_else(|| missing("dtype"))?;
        let (dims_at, ndim) = shape.ok_or_else(|| missing("shape"))?;
        Ok(Entry {
            dtype,
            dims_at,
            ndim,
            off: off.ok_or_else(|| missing("off"))?,
            len: len.ok_or_else(|| missing("len"))?,
            crc32c: u32::try_from(crc).map_err(|_| FormatError::WrongType {
                offset: at,
                item,
                key: "crc32c",
                expected: "32-bit unsigned int",
                found: "larger int",
            })?,
        })
    }
}

/// The unsigned int (major type 0, any argument width) at `s[*i..]`, advancing `i` past it.
#[inline(always)]
fn uint_at(s: &[u8], i: &mut usize) -> Option<u64> {
    let at = *i;
    let (v, w) = match *s.get(at)? {
        b @ 0..=23 => (b as u64, 1),
        24 => (*s.get(at + 1)? as u64, 2),
        25 => (
            u16::from_be_bytes(s.get(at + 1..at + 3)?.try_into().ok()?) as u64,
            3,
        ),
        26 => (
            u32::from_be_bytes(s.get(at + 1..at + 5)?.try_into().ok()?) as u64,
            5,
        ),
        27 => (u64::from_be_bytes(s.get(at + 1..at + 9)?.try_into().ok()?), 9),
        _ => return None,
    };
    *i = at + w;
    Some(v)
}

/// [`DType::from_name`] on the name's bytes, as one match.
#[inline(always)]
fn dtype_from_bytes(raw: &[u8]) -> Option<DType> {
    Some(match raw {
        b"bool" => DType::Bool,
        b"uint8" => DType::U8,
        b"uint16" => DType::U16,
        b"uint32" => DType::U32,
        b"uint64" => DType::U64,
        b"int8" => DType::I8,
        b"int16" => DType::I16,
        b"int32" => DType::I32,
        b"int64" => DType::I64,
        b"float16" => DType::F16,
        b"bfloat16" => DType::BF16,
        b"float32" => DType::F32,
        b"float64" => DType::F64,
        b"complex64" => DType::C64,
        b"complex128" => DType::C128,
        _ => return None,
    })
}

fn head_kind(h: &Header) -> &'static str {
    match h {
        Header::Positive(_) => "unsigned int",
        Header::Negative(_) => "negative int",
        Header::Float(_) => "float",
        Header::Simple(_) => "simple value",
        Header::Tag(_) => "tag",
        Header::Break => "break",
        Header::Bytes(_) => "byte string",
        Header::Text(_) => "text",
        Header::Array(_) => "array",
        Header::Map(_) => "map",
    }
}

fn get<'v>(map: &'v [(String, Val)], key: &'static str, at: u64, item: Item) -> Result<&'v Val, FormatError> {
    map.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .ok_or(FormatError::MissingKey {
            offset: at,
            item,
            key,
        })
}

fn uint(v: &Val, at: u64, item: Item, key: &'static str) -> Result<u64, FormatError> {
    match v {
        Val::Uint(u) => Ok(*u),
        other => Err(FormatError::WrongType {
            offset: at,
            item,
            key,
            expected: "unsigned int",
            found: other.kind(),
        }),
    }
}

/// A tensor entry as parsed: its shape is `ndim` axes at `dims_at` in the header's shared axis
/// list, so parsing allocates nothing per entry.
#[derive(Clone, Copy, Debug)]
struct Entry {
    dtype: DType,
    dims_at: usize,
    ndim: usize,
    off: u64,
    len: u64,
    crc32c: u32,
}

/// Where an entry parsed by [`Parser::tensor_entry_fast`] lies in the parser's bytes: it
/// starts at `start`, its offset value at `off_at` and ends before `off_end`, its CRC value
/// starts at `crc_at` and ends the entry at `end`.
#[derive(Clone, Copy, Debug)]
struct EntryBytes {
    start: usize,
    off_at: usize,
    off_end: usize,
    crc_at: usize,
    end: usize,
    /// Whether the offset and the CRC are both 4-byte ints (`1a` and 4 bytes), as in most
    /// entries of a large file ([`Parser::tensor_entry_fixed`]).
    fixed: bool,
}

impl EntryBytes {
    fn new(
        bytes: &[u8],
        start: usize,
        off_at: usize,
        off_end: usize,
        crc_at: usize,
        end: usize,
    ) -> EntryBytes {
        let four = |at: usize, end: usize| end - at == 5 && bytes[at] == 0x1a;
        EntryBytes {
            start,
            off_at,
            off_end,
            crc_at,
            end,
            fixed: four(off_at, off_end) && four(crc_at, end),
        }
    }
}

/// The tree with an empty placeholder tensor at each reference, and the references (index,
/// numpy scalar) in document order, which is the order [`fill`] visits them in.
#[derive(Debug)]
struct Skeleton {
    tree: Pytree,
    refs: Vec<(u64, bool)>,
}

/// A tensor-free stand-in for a reference until its tensor is read (no allocation).
fn placeholder() -> Tensor {
    Tensor::from_vec::<u8>(&[0], Vec::new()).expect("an empty shape holds no elements")
}

/// The references met while parsing a tree, and the placeholder cloned for each; or, with
/// `tensors`, the tensors taken directly, which must be referenced in file order (`bad`
/// records any other reference).
struct Refs {
    list: Vec<(u64, bool)>,
    placeholder: Tensor,
    tensors: Option<std::vec::IntoIter<Pytree>>,
    /// How many of `tensors` were taken.
    taken: usize,
    bad: bool,
}

impl Refs {
    fn new() -> Refs {
        Refs {
            list: Vec::new(),
            placeholder: placeholder(),
            tensors: None,
            taken: 0,
            bad: false,
        }
    }

    /// The leaf for reference `i` (a numpy scalar if `scalar`) holding the placeholder, or the
    /// next tensor itself when they are given (taken in order: no slot is left behind). The
    /// tensor is moved once, into the leaf.
    #[inline]
    fn leaf(&mut self, i: u64, scalar: bool) -> Pytree {
        let Some(ts) = &mut self.tensors else {
            self.list.push((i, scalar));
            return wrap(self.placeholder.clone(), scalar);
        };
        if i == self.taken as u64 {
            match (ts.next(), scalar) {
                // The leaf as built: moved once more, into the tree.
                (Some(leaf @ Pytree::Tensor(_)), false) => {
                    self.taken += 1;
                    return leaf;
                }
                (Some(Pytree::Tensor(t)), true) if t.ndim() == 0 => {
                    self.taken += 1;
                    return Pytree::Scalar(t);
                }
                _ => {}
            }
        }
        self.bad = true;
        wrap(self.placeholder.clone(), scalar)
    }
}

/// `t` as a tensor leaf, or a numpy-scalar one.
fn wrap(t: Tensor, scalar: bool) -> Pytree {
    if scalar {
        Pytree::Scalar(t)
    } else {
        Pytree::Tensor(t)
    }
}

/// The tensor of a leaf that [`payloads`] built (always a tensor leaf).
fn tensor_of(p: Pytree) -> Option<Tensor> {
    match p {
        Pytree::Tensor(t) => Some(t),
        _ => None,
    }
}

/// A parsed and validated header, with compact tensor entries.
struct RawHeader {
    header_len: u64,
    version: [u64; 2],
    align: u64,
    entries: Vec<Entry>,
    dims: Vec<usize>,
    tree: Skeleton,
    meta: Option<Val>,
    data_base: u64,
    datalen: u64,
}

impl RawHeader {
    fn shape(&self, e: &Entry) -> &[usize] {
        &self.dims[e.dims_at..e.dims_at + e.ndim]
    }
}

/// A parsed and validated header.
#[derive(Debug)]
pub struct ParsedHeader {
    /// End of the header item (its byte length, magic included).
    pub header_len: u64,
    /// `[major, minor]`.
    pub version: [u64; 2],
    /// Payload alignment.
    pub align: u64,
    /// Tensor entries in file order.
    pub tensors: Vec<TensorEntry>,
    tree: Skeleton,
    meta: Option<Val>,
    /// Data base B.
    pub data_base: u64,
    /// Bytes from B to the trailer.
    pub datalen: u64,
}

impl ParsedHeader {
    /// The user meta-data, if the header has any.
    pub fn meta(&self) -> Result<Option<Pytree>, FormatError> {
        self.meta
            .as_ref()
            .map(|m| {
                build_tree(m.clone(), &mut |_, _, at| {
                    Err(FormatError::BadTensorRef {
                        offset: at,
                        index: u64::MAX,
                    })
                })
            })
            .transpose()
    }
}

/// Parses the header from `bytes` (the start of a file of `file_len` bytes). Returns
/// [`FormatError::Truncated`] if the header runs past `bytes` (the caller may retry with more).
pub fn parse_header(bytes: &[u8], file_len: u64) -> Result<ParsedHeader, FormatError> {
    let r = parse_raw(bytes, file_len)?;
    let tensors = r
        .entries
        .iter()
        .map(|e| TensorEntry {
            dtype: e.dtype,
            shape: r.shape(e).to_vec(),
            off: e.off,
            len: e.len,
            crc32c: e.crc32c,
        })
        .collect();
    Ok(ParsedHeader {
        header_len: r.header_len,
        version: r.version,
        align: r.align,
        tensors,
        tree: r.tree,
        meta: r.meta,
        data_base: r.data_base,
        datalen: r.datalen,
    })
}

/// The tree as parsed: straight into a skeleton when the format id and version came first (as
/// in every file the writer makes), else generically, built once they are checked.
enum TreeParse {
    Skeleton(Skeleton),
    Val(Val),
}

fn parse_raw(bytes: &[u8], file_len: u64) -> Result<RawHeader, FormatError> {
    if bytes.len() < 3 || bytes[..3] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let mut p = Parser::new(&bytes[3..], 3);
    let item = Item::Header;
    let n = p.map_head(item, "")?;
    let (mut fmt, mut ver, mut align, mut tensors, mut tree, mut meta) = (None, None, None, None, None, None);
    let mut dims = Vec::new();
    let mut others: Vec<&str> = Vec::new();
    for _ in 0..n {
        let kat = p.at();
        let key = p.key()?;
        let dup = match key {
            "fmt" => fmt.replace(p.value(1)?).is_some(),
            "ver" => ver.replace(p.value(1)?).is_some(),
            "align" => align.replace(p.uint(item, "align")?).is_some(),
            "tree" => {
                let t = if check_id(&fmt, &ver).is_ok() {
                    let mut refs = Refs::new();
                    let tree = p.tree(1, &mut refs)?;
                    TreeParse::Skeleton(Skeleton {
                        tree,
                        refs: refs.list,
                    })
                } else {
                    TreeParse::Val(p.value(1)?)
                };
                tree.replace(t).is_some()
            }
            "meta" => meta.replace(p.value(1)?).is_some(),
            "tensors" => {
                // The format id and version come first in every valid header: check them before
                // reading entries, so another format or version gets the right error.
                check_id(&fmt, &ver)?;
                let count = p.array_head(item, "tensors")?;
                tensors.replace(p.tensor_entries(count, &mut dims)?).is_some()
            }
            other => p.skip_unknown(other, &mut others)?,
        };
        if dup {
            return Err(FormatError::DuplicateKey {
                offset: kat,
                key: key.to_string(),
            });
        }
    }
    let header_len = 3 + p.pos() as u64;
    let version = check_id(&fmt, &ver)?;
    let missing = |key| FormatError::MissingKey { offset: 3, item, key };
    let align = align.ok_or(missing("align"))?;
    if !(8..=65536).contains(&align) || !align.is_power_of_two() {
        return Err(FormatError::BadAlign { align });
    }
    let entries = tensors.ok_or(missing("tensors"))?;
    let tree = match tree.ok_or(missing("tree"))? {
        TreeParse::Skeleton(s) => s,
        TreeParse::Val(v) => {
            let mut refs = Vec::new();
            let tree = build_tree(v, &mut |i, scalar, _| {
                refs.push((i, scalar));
                Ok(if scalar {
                    Pytree::Scalar(placeholder())
                } else {
                    Pytree::Tensor(placeholder())
                })
            })?;
            Skeleton { tree, refs }
        }
    };
    let (data_base, datalen) = check_layout(&entries, &dims, align, header_len, file_len)?;
    Ok(RawHeader {
        header_len,
        version,
        align,
        entries,
        dims,
        tree,
        meta,
        data_base,
        datalen,
    })
}

/// Checks every entry's shape, length and offset against the layout rule and the file, before
/// anything is allocated for payloads; returns the data base B and the data length.
fn check_layout(
    entries: &[Entry],
    dims: &[usize],
    align: u64,
    header_len: u64,
    file_len: u64,
) -> Result<(u64, u64), FormatError> {
    // Validate every length against the file before anything is allocated for payloads.
    let too_large = FormatError::TooLarge { file_len };
    let mut cur = 0u64;
    let mut prev: Option<&Entry> = None;
    let mut head_len = 0;
    for (index, e) in entries.iter().enumerate() {
        // An entry of the previous one's dtype, shape and length passes the same size checks.
        let same =
            prev.is_some_and(|p| (p.dtype, p.dims_at, p.ndim, p.len) == (e.dtype, e.dims_at, e.ndim, e.len));
        prev = Some(e);
        if !same {
            check_size(index, e, &dims[e.dims_at..e.dims_at + e.ndim])?;
            head_len = payload_head_len(e.dtype, e.len);
        }
        // The layout rule, as `layout` computes it.
        let off = cur
            .checked_add(head_len)
            .and_then(|x| align_up(x, align))
            .ok_or_else(|| too_large.clone())?;
        if e.off != off {
            return Err(FormatError::BadOffset {
                index,
                expected: off,
                found: e.off,
            });
        }
        cur = off.checked_add(e.len).ok_or_else(|| too_large.clone())?;
    }
    let datalen = cur;
    let data_base = align_up(header_len, align).ok_or_else(|| too_large.clone())?;
    match data_base.checked_add(datalen) {
        Some(end) if end < file_len => Ok((data_base, datalen)),
        _ => Err(too_large),
    }
}

/// Checks that entry `index`'s `shape` fits ndarray and its dtype gives the entry's length.
fn check_size(index: usize, e: &Entry, shape: &[usize]) -> Result<(), FormatError> {
    // ndarray needs the product of the non-zero axes to fit isize.
    let nonzero = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))
        .filter(|&p| p <= isize::MAX as usize);
    match (nonzero, checked_nbytes(e.dtype, shape).ok()) {
        (Some(_), Some(n)) if n as u64 == e.len => Ok(()),
        (Some(_), Some(n)) => Err(FormatError::LengthMismatch {
            index,
            expected: n as u64,
            found: e.len,
        }),
        _ => Err(FormatError::BadShape { index }),
    }
}

/// Checks the format id and the major version; returns `[major, minor]`.
fn check_id(fmt: &Option<Val>, ver: &Option<Val>) -> Result<[u64; 2], FormatError> {
    match fmt {
        Some(Val::Text(s)) if s == FORMAT_ID => {}
        _ => return Err(FormatError::NotNative),
    }
    let version = match ver {
        Some(Val::Array(v)) if v.len() == 2 => match (&v[0], &v[1]) {
            (Val::Uint(a), Val::Uint(b)) => [*a, *b],
            _ => return Err(bad_ver(ver)),
        },
        _ => return Err(bad_ver(ver)),
    };
    if version[0] != VERSION[0] {
        return Err(FormatError::UnsupportedVersion {
            major: version[0],
            minor: version[1],
        });
    }
    Ok(version)
}

fn bad_ver(v: &Option<Val>) -> FormatError {
    match v {
        None => FormatError::MissingKey {
            offset: 3,
            item: Item::Header,
            key: "ver",
        },
        Some(v) => FormatError::WrongType {
            offset: 3,
            item: Item::Header,
            key: "ver",
            expected: "[major, minor]",
            found: v.kind(),
        },
    }
}

/// Parses the trailer from its bytes (which must end the file) and checks it against the header.
fn check_trailer(bytes: &[u8], at: u64, count: usize, datalen: u64, hcrc: u32) -> Result<(), FormatError> {
    let mut p = Parser::new(bytes, at);
    let v = p.value(0)?;
    if p.pos() != bytes.len() {
        return Err(FormatError::TrailingData {
            offset: at + p.pos() as u64,
        });
    }
    let item = Item::Trailer;
    let Val::Map(m) = v else {
        return Err(FormatError::BadTrailer {
            offset: at,
            what: "not a map".into(),
        });
    };
    let bad = |what: String| FormatError::BadTrailer { offset: at, what };
    if !matches!(get(&m, "end", at, item)?, Val::Text(s) if s == FORMAT_ID) {
        return Err(bad("`end` is not the format id".into()));
    }
    let n = uint(get(&m, "n", at, item)?, at, item, "n")?;
    if n != count as u64 {
        return Err(bad(format!("n = {n}, but the header lists {count}")));
    }
    let d = uint(get(&m, "datalen", at, item)?, at, item, "datalen")?;
    if d != datalen {
        return Err(bad(format!("datalen = {d}, expected {datalen}")));
    }
    let stored = uint(get(&m, "hcrc", at, item)?, at, item, "hcrc")?;
    if stored != hcrc as u64 {
        return Err(FormatError::HeaderChecksum {
            stored,
            computed: hcrc,
        });
    }
    Ok(())
}

fn build_tree(
    v: Val,
    tensor: &mut dyn FnMut(u64, bool, u64) -> Result<Pytree, FormatError>,
) -> Result<Pytree, FormatError> {
    // Offsets inside the tree are not tracked per value; errors use offset 0 within the header.
    let at = 0;
    Ok(match v {
        Val::Map(m) => {
            let mut out = PytreeMap::with_capacity_and_hasher(m.len(), Default::default());
            for (k, v) in m {
                out.insert(k, build_tree(v, tensor)?);
            }
            Pytree::Map(out)
        }
        Val::Array(a) => Pytree::List(
            a.into_iter()
                .map(|v| build_tree(v, tensor))
                .collect::<Result<_, _>>()?,
        ),
        Val::Uint(u) => i64::try_from(u).map_or(Pytree::UInt(u), Pytree::Int),
        Val::Nint(n) => {
            if n > i64::MAX as u64 {
                return Err(FormatError::IntOutOfRange);
            }
            Pytree::Int(!(n as i64))
        }
        Val::Float(f) => Pytree::Float(f),
        Val::Bool(b) => Pytree::Bool(b),
        Val::Null => Pytree::None,
        Val::Bytes(b) => Pytree::Bytes(b),
        Val::Text(s) => Pytree::Str(s),
        Val::Ref(i, scalar) => tensor(i, scalar, at)?,
        Val::Tag(TAG_TENSOR, i) => match *i {
            Val::Uint(i) => tensor(i, false, at)?,
            _ => {
                return Err(FormatError::BadTensorRef {
                    offset: at,
                    index: u64::MAX,
                })
            }
        },
        Val::Tag(TAG_SCALAR, i) => match *i {
            Val::Uint(i) => tensor(i, true, at)?,
            _ => {
                return Err(FormatError::BadTensorRef {
                    offset: at,
                    index: u64::MAX,
                })
            }
        },
        Val::Tag(TAG_UINT, u) => match *u {
            Val::Uint(u) => Pytree::UInt(u),
            _ => return Err(FormatError::UnknownTag { tag: TAG_UINT }),
        },
        Val::Tag(TAG_COMPLEX, c) => match &*c {
            Val::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                (Val::Float(re), Val::Float(im)) => Pytree::Complex(crate::C128::new(*re, *im)),
                _ => return Err(FormatError::UnknownTag { tag: TAG_COMPLEX }),
            },
            _ => return Err(FormatError::UnknownTag { tag: TAG_COMPLEX }),
        },
        Val::Tag(t, _) => return Err(FormatError::UnknownTag { tag: t }),
    })
}

/// Where to read payloads with several threads (`pread`), when the source is a file.
pub struct Parallel<'f> {
    /// The open file.
    pub file: &'f std::fs::File,
    /// Threads to use.
    pub threads: usize,
    /// Payloads of at least this many bytes are read in parallel.
    pub min_bytes: u64,
}

/// Reads a whole native checkpoint from `r` (positioned anywhere; `file_len` bytes long).
/// Lengths are checked against `file_len` before any allocation; every tensor's CRC32C and the
/// header's are verified. With `parallel`, large payloads are read by several threads.
pub fn read<R: Read + Seek>(
    r: &mut R,
    file_len: u64,
    parallel: Option<&Parallel<'_>>,
) -> Result<Pytree, FormatError> {
    let (h, hcrc) = read_header(r, file_len)?;
    let mut br = io::BufReader::with_capacity(1 << 16, &mut *r);
    br.seek(SeekFrom::Start(h.header_len)).map_err(io_err)?;
    let mut pos = h.header_len;
    let mut expect = Vec::with_capacity(128);
    let mut got = Vec::with_capacity(128);
    push_padding(&mut expect, (h.data_base - h.header_len) as usize);
    got.resize(expect.len(), 0);
    br.read_exact(&mut got)
        .map_err(|_| FormatError::Truncated { offset: pos })?;
    if got != expect {
        let i = got.iter().zip(&expect).position(|(a, b)| a != b).unwrap_or(0);
        return Err(FormatError::BadPadding {
            offset: pos + i as u64,
            index: 0,
        });
    }
    pos += expect.len() as u64;
    expect.clear();
    let mut cur = 0u64;
    let mut out: Vec<Option<Tensor>> = Vec::with_capacity(h.tensors.len());
    for (index, e) in h.tensors.iter().enumerate() {
        let hl = payload_head_len(e.dtype, e.len);
        push_padding(&mut expect, (e.off - hl - cur) as usize);
        payload_head(e.dtype, e.len, &mut expect);
        got.resize(expect.len(), 0);
        br.read_exact(&mut got)
            .map_err(|_| FormatError::Truncated { offset: pos })?;
        if got != expect {
            let i = got.iter().zip(&expect).position(|(a, b)| a != b).unwrap_or(0);
            return Err(FormatError::BadPadding {
                offset: pos + i as u64,
                index,
            });
        }
        pos += expect.len() as u64;
        expect.clear();
        let t = match parallel {
            Some(p) if e.len >= p.min_bytes && p.threads > 1 => {
                let mut rd = ParallelReader {
                    file: p.file,
                    pos,
                    threads: p.threads,
                    crc: 0,
                    done: 0,
                };
                let t = Tensor::read_le(e.dtype, &e.shape, &mut rd);
                br.seek(SeekFrom::Start(pos + e.len)).map_err(io_err)?;
                t.map(|t| (t, rd.crc))
            }
            _ => {
                let mut rd = CrcReader {
                    inner: &mut br,
                    crc: 0,
                };
                Tensor::read_le(e.dtype, &e.shape, &mut rd).map(|t| (t, rd.crc))
            }
        };
        let (t, crc) = t.map_err(|err| FormatError::Tensor {
            index,
            offset: pos,
            source: Box::new(err),
        })?;
        if crc != e.crc32c {
            return Err(FormatError::Checksum {
                index,
                offset: pos,
                stored: e.crc32c,
                computed: crc,
            });
        }
        pos += e.len;
        cur = e.off + e.len;
        out.push(Some(t));
    }
    let trailer_at = h.data_base + h.datalen;
    let mut tb = vec![0u8; (file_len - trailer_at).min(1 << 16) as usize];
    br.read_exact(&mut tb)
        .map_err(|_| FormatError::Truncated { offset: trailer_at })?;
    if file_len - trailer_at > tb.len() as u64 {
        return Err(FormatError::TrailingData {
            offset: trailer_at + tb.len() as u64,
        });
    }
    check_trailer(&tb, trailer_at, h.tensors.len(), h.datalen, hcrc)?;
    assemble(h.tree, out.len(), &mut |i| {
        out[i].take().ok_or(FormatError::BadTensorRef {
            offset: 0,
            index: i as u64,
        })
    })
}

/// Builds the tree from the skeleton: `make(i)` gives tensor `i` for its (single) reference.
/// Every index must be referenced exactly once; numpy scalars must be 0-d.
fn assemble(
    skel: Skeleton,
    count: usize,
    make: &mut dyn FnMut(usize) -> Result<Tensor, FormatError>,
) -> Result<Pytree, FormatError> {
    let mut used = vec![false; count];
    let mut tree = skel.tree;
    let mut refs = skel.refs.into_iter();
    fill(&mut tree, &mut |x| {
        let bad = |index| FormatError::BadTensorRef { offset: 0, index };
        let (i, scalar) = refs.next().ok_or(bad(u64::MAX))?;
        let k = usize::try_from(i)
            .ok()
            .filter(|&k| k < count && !used[k])
            .ok_or(bad(i))?;
        used[k] = true;
        let t = make(k)?;
        if scalar && t.ndim() != 0 {
            return Err(bad(i));
        }
        *x = t;
        Ok(())
    })?;
    if let Some(i) = used.iter().position(|&u| !u) {
        return Err(FormatError::UnreferencedTensor {
            index: i,
            count: count as u64,
        });
    }
    Ok(tree)
}

/// Calls `f` on every tensor leaf (the placeholders of a skeleton) in document order.
fn fill(
    t: &mut Pytree,
    f: &mut dyn FnMut(&mut Tensor) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    match t {
        Pytree::Map(m) => {
            for v in m.values_mut() {
                fill(v, f)?;
            }
        }
        Pytree::List(l) => {
            for v in l {
                fill(v, f)?;
            }
        }
        Pytree::Tensor(x) | Pytree::Scalar(x) => f(x)?,
        _ => {}
    }
    Ok(())
}

fn io_err(e: io::Error) -> FormatError {
    FormatError::Io(e.to_string())
}

/// Reads and parses the header (growing the read window as needed, never past the file), and
/// returns it with its CRC32C.
pub fn read_header<R: Read + Seek>(r: &mut R, file_len: u64) -> Result<(ParsedHeader, u32), FormatError> {
    let mut want = file_len.min(1 << 20) as usize;
    loop {
        let mut buf = vec![0u8; want];
        r.seek(SeekFrom::Start(0)).map_err(io_err)?;
        r.read_exact(&mut buf)
            .map_err(|_| FormatError::Truncated { offset: 0 })?;
        match parse_header(&buf, file_len) {
            Err(FormatError::Truncated { .. }) if (want as u64) < file_len => {
                want = (want as u64 * 4).min(file_len) as usize;
            }
            Err(e) => return Err(e),
            Ok(h) => {
                let crc = crc32c::crc32c(&buf[..h.header_len as usize]);
                return Ok((h, crc));
            }
        }
    }
}

/// Quick structural check of a file: header, layout and trailer (payload CRCs not read).
pub fn check_structure<R: Read + Seek>(r: &mut R, file_len: u64) -> Result<ParsedHeader, FormatError> {
    let (h, hcrc) = read_header(r, file_len)?;
    let at = h.data_base + h.datalen;
    let n = file_len - at;
    if n > 1 << 16 {
        return Err(FormatError::TrailingData {
            offset: at + (1 << 16),
        });
    }
    let mut tb = vec![0u8; n as usize];
    r.seek(SeekFrom::Start(at)).map_err(io_err)?;
    r.read_exact(&mut tb)
        .map_err(|_| FormatError::Truncated { offset: at })?;
    check_trailer(&tb, at, h.tensors.len(), h.datalen, hcrc)?;
    Ok(h)
}

/// Decodes a native checkpoint held in memory (the same checks as [`read`], on a slice).
pub fn decode(bytes: &[u8]) -> Result<Pytree, FormatError> {
    decode_threads(bytes, 1)
}

/// Files with at least this many tensors and payload bytes are decoded by two threads when
/// more are allowed (below that, a second thread costs more than it saves on a busy machine).
const SPLIT_MIN_TENSORS: usize = 2048;
const SPLIT_MIN_BYTES: u64 = 8 << 20;

/// [`decode`], checking and copying the payloads of a file with many tensors on two threads
/// when `threads > 1`. Errors are the same as [`decode`]'s: the one at the lowest index wins.
pub fn decode_threads(bytes: &[u8], threads: usize) -> Result<Pytree, FormatError> {
    let file_len = bytes.len() as u64;
    let split = threads > 1 && file_len >= SPLIT_MIN_BYTES;
    if !split {
        if let Some(t) = direct::decode(bytes) {
            return Ok(t);
        }
    }
    let h = parse_raw(bytes, file_len)?;
    let hcrc = crc32c::crc32c(&bytes[..h.header_len as usize]);
    // parse_raw checked B + datalen < file_len, so every slice below is in bounds.
    let mut expect = Vec::with_capacity(128);
    push_padding(&mut expect, (h.data_base - h.header_len) as usize);
    check_bytes(bytes, h.header_len as usize, &expect, 0)?;
    let n = h.entries.len();
    let payloads = |range| payloads(bytes, &h.entries, &h.dims, h.data_base, range);
    let tensors = if split && n >= SPLIT_MIN_TENSORS && h.datalen >= SPLIT_MIN_BYTES {
        // Split where about half of the work (bytes, plus a fixed cost per tensor) is done.
        let work = |e: &Entry| e.len + 512;
        let total: u64 = h.entries.iter().map(work).sum();
        let mut acc = 0u64;
        let mid = h
            .entries
            .iter()
            .position(|e| {
                acc += work(e);
                acc >= total / 2
            })
            .map_or(n, |i| i + 1);
        let (lo, hi) = std::thread::scope(|s| {
            let hi = s.spawn(|| payloads(mid..n));
            let lo = payloads(0..mid);
            (lo, hi.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        let mut lo = lo?;
        lo.extend(hi?);
        lo
    } else {
        payloads(0..n)?
    };
    let trailer_at = (h.data_base + h.datalen) as usize;
    check_trailer(&bytes[trailer_at..], trailer_at as u64, n, h.datalen, hcrc)?;
    let mut out: Vec<Option<Tensor>> = tensors.into_iter().map(tensor_of).collect();
    assemble(h.tree, n, &mut |i| {
        out[i].take().ok_or(FormatError::BadTensorRef {
            offset: 0,
            index: i as u64,
        })
    })
}

/// The one-pass decode of a header laid out as the writer makes it (format id, version,
/// optional meta, tree, align, tensors): the entries and payloads first (the tree is skipped),
/// then the tree, which takes each tensor where it is referenced (no placeholders, no second
/// pass). It gives up (`None`) on any other layout or any error; [`decode_threads`] then
/// decodes as usual and reports the error.
mod direct {
    use super::*;

    /// A parser at the tree (the format id and version checked), or `None`.
    fn at_tree(bytes: &[u8]) -> Option<Parser<'_>> {
        if bytes.len() < 3 || bytes[..3] != MAGIC {
            return None;
        }
        let mut p = Parser::new(&bytes[3..], 3);
        let n = p.map_head(Item::Header, "").ok()?;
        if p.key_fast().ok()? != "fmt" {
            return None;
        }
        let fmt = Some(p.value(1).ok()?);
        if p.key_fast().ok()? != "ver" {
            return None;
        }
        let ver = Some(p.value(1).ok()?);
        check_id(&fmt, &ver).ok()?;
        match n {
            5 => {}
            // The meta is checked as parse_raw does (decoding drops it).
            6 if p.key_fast().ok()? == "meta" => drop(p.value(1).ok()?),
            _ => return None,
        }
        if p.key_fast().ok()? != "tree" {
            return None;
        }
        Some(p)
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Pytree> {
        let file_len = bytes.len() as u64;
        let mut t = at_tree(bytes)?;
        let mut p = t.clone();
        p.skip(1)?;
        let tree_end = p.pos();
        if p.key_fast().ok()? != "align" {
            return None;
        }
        let align = p.uint(Item::Header, "align").ok()?;
        if p.key_fast().ok()? != "tensors" {
            return None;
        }
        let count = p.array_head(Item::Header, "tensors").ok()?;
        let mut dims = Vec::new();
        let entries = p.tensor_entries(count, &mut dims).ok()?;
        let header_len = 3 + p.pos() as u64;
        if !(8..=65536).contains(&align) || !align.is_power_of_two() {
            return None;
        }
        let (data_base, datalen) = check_layout(&entries, &dims, align, header_len, file_len).ok()?;
        let mut expect = Vec::new();
        push_padding(&mut expect, (data_base - header_len) as usize);
        check_bytes(bytes, header_len as usize, &expect, 0).ok()?;
        let hcrc = crc32c::crc32c(&bytes[..header_len as usize]);
        let trailer_at = (data_base + datalen) as usize;
        check_trailer(&bytes[trailer_at..], trailer_at as u64, count, datalen, hcrc).ok()?;
        let tensors = payloads(bytes, &entries, &dims, data_base, 0..count).ok()?;
        let mut refs = Refs::new();
        refs.tensors = Some(tensors.into_iter());
        let tree = t.tree(1, &mut refs).ok()?;
        // Tensors are taken in order, each once: all were taken when the count is reached.
        if refs.bad || t.pos() != tree_end || refs.taken != count {
            return None;
        }
        Some(tree)
    }
}

/// The CRC32Cs of a group of up to three payloads (see [`crc32c_x3`]).
fn group_crcs<'b>(group: &[Entry], payload: impl Fn(&Entry) -> &'b [u8]) -> [u32; 3] {
    match group {
        [a, b, c] => crc32c_x3(payload(a), payload(b), payload(c)),
        _ => {
            let mut v = [0; 3];
            for (v, e) in v.iter_mut().zip(group) {
                *v = crc32c::crc32c(payload(e));
            }
            v
        }
    }
}

/// Checks the padding, payload head and CRC32C of the tensors in `range` and copies each into
/// a new tensor while its bytes are in cache; stops at the first error.
fn payloads(
    bytes: &[u8],
    entries: &[Entry],
    dims: &[usize],
    data_base: u64,
    range: std::ops::Range<usize>,
) -> Result<Vec<Pytree>, FormatError> {
    let base = data_base as usize;
    let mut expect = Vec::with_capacity(128);
    let mut out = Vec::with_capacity(range.len());
    let mut cur = match range.start {
        0 => 0,
        i => entries[i - 1].off + entries[i - 1].len,
    };
    // parse_raw checked every payload lies inside the file.
    let payload = |e: &Entry| &bytes[base + e.off as usize..base + (e.off + e.len) as usize];
    let mut last = None;
    let mut layout: Option<(TensorLayout, (usize, usize))> = None;
    let mut first = range.start;
    while first < range.end {
        // CRCs three at a time (see crc32c_x3), then each tensor in order.
        let group = &entries[first..range.end.min(first + 3)];
        let crcs = group_crcs(group, payload);
        for (j, (e, &crc)) in group.iter().zip(&crcs).enumerate() {
            let index = first + j;
            // The expected padding and head depend only on the distance from the previous
            // payload, the dtype and the length: rebuilt only when those change (runs of
            // same-sized tensors reuse them). check_layout checked the head fits the distance.
            let span = e.off - cur;
            if last != Some((span, e.dtype, e.len)) {
                expect.clear();
                push_padding(&mut expect, (span - payload_head_len(e.dtype, e.len)) as usize);
                payload_head(e.dtype, e.len, &mut expect);
                last = Some((span, e.dtype, e.len));
            }
            check_bytes(bytes, base + cur as usize, &expect, index)?;
            let pos = base + e.off as usize;
            if crc != e.crc32c {
                return Err(FormatError::Checksum {
                    index,
                    offset: pos as u64,
                    stored: e.crc32c,
                    computed: crc,
                });
            }
            let shape = &dims[e.dims_at..e.dims_at + e.ndim];
            let tensor_err = |source| FormatError::Tensor {
                index,
                offset: pos as u64,
                source: Box::new(source),
            };
            // An entry sharing the last one's shape in `dims` (and its dtype) has its layout.
            let at = (e.dims_at, e.ndim);
            let layout = match &layout {
                Some((l, a)) if *a == at && l.dtype() == e.dtype => l,
                Some((l, _)) if l.is(e.dtype, shape) => l,
                _ => {
                    &layout
                        .insert((TensorLayout::new(e.dtype, shape).map_err(tensor_err)?, at))
                        .0
                }
            };
            layout
                .push_from_le_bytes(payload(e), &mut out, Pytree::Tensor)
                .map_err(tensor_err)?;
            cur = e.off + e.len;
        }
        first += group.len();
    }
    Ok(out)
}

/// Whether `a` and `b` are equal. Lengths from 8 to 64 bytes (entry parts, padding and payload
/// heads) are compared inline in two or four overlapping words, cheaper than a call to
/// `memcmp` for so few.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let w8 = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    let w16 = |s: &[u8], i: usize| u128::from_le_bytes(s[i..i + 16].try_into().expect("16 bytes"));
    match n {
        8..=16 => (w8(a, 0) ^ w8(b, 0)) | (w8(a, n - 8) ^ w8(b, n - 8)) == 0,
        17..=32 => (w16(a, 0) ^ w16(b, 0)) | (w16(a, n - 16) ^ w16(b, n - 16)) == 0,
        33..=64 => {
            (w16(a, 0) ^ w16(b, 0))
                | (w16(a, 16) ^ w16(b, 16))
                | (w16(a, n - 32) ^ w16(b, n - 32))
                | (w16(a, n - 16) ^ w16(b, n - 16))
                == 0
        }
        _ => a == b,
    }
}

/// Checks that `bytes` holds `expect` at `pos` (padding and payload heads).
#[inline]
fn check_bytes(bytes: &[u8], pos: usize, expect: &[u8], index: usize) -> Result<(), FormatError> {
    let got = &bytes[pos..pos + expect.len()];
    if !same_bytes(got, expect) {
        let i = got.iter().zip(expect).position(|(a, b)| a != b).unwrap_or(0);
        return Err(FormatError::BadPadding {
            offset: (pos + i) as u64,
            index,
        });
    }
    Ok(())
}

/// Encodes `tree` as a native checkpoint in memory.
pub fn encode(tree: &Pytree) -> Result<Vec<u8>, EncodeError> {
    Ok(Plan::new(tree, None, DEFAULT_ALIGN)?.to_vec())
}

/// Reads through, updating a CRC32C, at most 1 MiB per call so the bytes are still in cache.
struct CrcReader<'r, R: Read> {
    inner: &'r mut R,
    crc: u32,
}

impl<R: Read> Read for CrcReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1 << 20);
        let got = self.inner.read(&mut buf[..n])?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..got]);
        Ok(got)
    }
}

/// A reader that fills each request with positional reads on several threads, computing the
/// CRC32C of each piece as it lands and combining them.
struct ParallelReader<'f> {
    file: &'f std::fs::File,
    pos: u64,
    threads: usize,
    crc: u32,
    done: u64,
}

impl Read for ParallelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if buf.is_empty() {
            return Ok(0);
        }
        let chunk = buf.len().div_ceil(self.threads).max(1 << 20);
        let start = self.pos + self.done;
        let file = self.file;
        let parts: Vec<io::Result<(u32, usize)>> = std::thread::scope(|s| {
            let hs: Vec<_> = buf
                .chunks_mut(chunk)
                .enumerate()
                .map(|(i, c)| {
                    s.spawn(move || -> io::Result<(u32, usize)> {
                        let mut crc = 0u32;
                        let base = start + (i * chunk) as u64;
                        let mut done = 0usize;
                        for piece in c.chunks_mut(1 << 20) {
                            file.read_exact_at(piece, base + done as u64)?;
                            crc = crc32c::crc32c_append(crc, piece);
                            done += piece.len();
                        }
                        Ok((crc, c.len()))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("reader thread panicked")))
                })
                .collect()
        });
        for p in parts {
            let (c, len) = p?;
            self.crc = crc32c::crc32c_combine(self.crc, c, len);
        }
        self.done += buf.len() as u64;
        Ok(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Pytree, Tensor};

    #[test]
    fn writer_files_take_the_direct_path() {
        // Tensor indices of every head width, scalars, lists, nesting, other leaves and meta.
        let mut big = Pytree::map();
        for i in 0..600usize {
            big = big.with(format!("k{i}"), Tensor::zeros(DType::F32, &[i % 5]).unwrap());
        }
        let tree = Pytree::map()
            .with("big", big)
            .with("s", Pytree::Scalar(Tensor::scalar(1.5f64)))
            .with(
                "l",
                Pytree::List(vec![
                    Pytree::Int(-3),
                    Pytree::None,
                    Tensor::zeros(DType::U8, &[2, 3]).unwrap().into(),
                ]),
            )
            .with("e", Pytree::map());
        let meta = Pytree::map().with("step", Pytree::Int(7));
        for m in [None, Some(&meta)] {
            let bytes = super::Plan::new(&tree, m, super::DEFAULT_ALIGN).unwrap().to_vec();
            let t = super::direct::decode(&bytes).expect("direct path");
            assert!(t == tree);
            // A flipped payload byte, header byte or trailer byte makes it give up.
            let (h, _) = super::read_header(&mut std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
            let last = h.tensors.len() - 1;
            let payload = (h.data_base + h.tensors[last].off) as usize;
            for at in [payload, 20, bytes.len() - 2] {
                let mut b = bytes.clone();
                b[at] ^= 1;
                assert!(super::direct::decode(&b).is_none(), "{at}");
            }
        }
    }

    #[test]
    fn same_bytes_equals_slice_equality() {
        let a: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37)).collect();
        for n in 0..=80 {
            assert!(super::same_bytes(&a[..n], &a[..n]));
            for at in 0..n {
                let mut b = a[..n].to_vec();
                b[at] ^= 0x10;
                assert!(!super::same_bytes(&a[..n], &b), "{n} {at}");
            }
            if n > 0 {
                assert!(!super::same_bytes(&a[..n], &a[..n - 1]));
            }
        }
    }

    #[test]
    fn repeated_entries_parse_as_the_general_parser_does() {
        // Runs of one dtype and shape (whose entries are matched against the previous one's
        // bytes), offsets and CRCs of every width (zero payloads give one small CRC, others
        // large ones; offsets pass 2^8 and 2^16), 0-d entries next to 1-d ones (both share a
        // place in the shape list), n-d shapes and a change of dtype within a shape.
        let mut tree = Pytree::map();
        for i in 0..400usize {
            let t = match i % 40 {
                0..=9 => Tensor::zeros(DType::F32, &[100]).unwrap(),
                10..=19 => Tensor::from_vec(&[100], (0..100).map(|k| (k * i) as f32).collect()).unwrap(),
                20 | 21 => Tensor::scalar(i as f64),
                22..=29 => Tensor::from_vec(&[2, 3], vec![i as i32; 6]).unwrap(),
                30..=34 => Tensor::from_vec(&[2, 3], vec![i as i64; 6]).unwrap(),
                _ => Tensor::from_vec(&[3], vec![i as u8, 1, 2]).unwrap(),
            };
            tree = tree.with(format!("t{i}"), t);
        }
        let bytes = super::encode(&tree).unwrap();
        let h = super::parse_raw(&bytes, bytes.len() as u64).unwrap();
        // The general parser, entry by entry, from the same place.
        let start = bytes.windows(8).position(|w| w == b"\x67tensors").unwrap() + 8;
        let mut p = super::Parser::new(&bytes[3..], 3);
        p.pos = start - 3;
        let n = p.array_head(super::Item::Header, "tensors").unwrap();
        assert_eq!(n, h.entries.len());
        let mut dims = Vec::new();
        for (index, e) in h.entries.iter().enumerate() {
            let g = p.tensor_entry(index, &mut dims).unwrap();
            assert_eq!(
                (g.dtype, g.off, g.len, g.crc32c),
                (e.dtype, e.off, e.len, e.crc32c),
                "{index}"
            );
            assert_eq!(&dims[g.dims_at..g.dims_at + g.ndim], h.shape(e), "{index}");
        }
        assert!(super::decode(&bytes).unwrap() == tree);
    }

    #[test]
    fn dtype_from_bytes_knows_every_name() {
        for d in crate::DType::ALL {
            assert_eq!(super::dtype_from_bytes(d.name().as_bytes()), Some(d));
        }
        assert_eq!(super::dtype_from_bytes(b"float8_e4m3fn"), None);
    }

    #[test]
    fn crc32c_x3_equals_three_crcs() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for (la, lb, lc) in [
            (0, 0, 0),
            (1, 9, 17),
            (8, 8, 8),
            (100, 37, 64),
            (300, 299, 7),
            (24, 0, 300),
        ] {
            let (a, b, c) = (
                &data[..la],
                &data[300 - lb..],
                &data[lc / 2..lc / 2 + (300 - lc).min(lc)],
            );
            assert_eq!(
                super::crc32c_x3(a, b, c),
                [crc32c::crc32c(a), crc32c::crc32c(b), crc32c::crc32c(c)],
                "{la} {lb} {lc}"
            );
        }
    }
}
