//! The reader: msgpack bytes -> borrowed value tree -> [`Pytree`].
//!
//! Stage 1 ([`Parser`]) checks the syntax and every length against the bytes that remain and
//! keeps array data as borrowed slices; stage 2 ([`build`]) copies each array once into its
//! tensor, joining chunked arrays straight into one buffer.

use super::{err, BpError, MAX_DEPTH, R};
use crate::dtype::{DType, C128};
use crate::pytree::Pytree;
use crate::tensor::{Tensor, TensorError};
use rmp::Marker;
use std::io::Read;

const CHUNKED_KEY: &str = "__msgpack_chunked_array__";

/// Items preallocated for a container before they are read: a declared count is a claim, and
/// containers grow with what is actually there.
const PREALLOC: usize = 64;

/// One segment of the path of the value being read.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn join(path: &[Seg<'_>]) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let parts: Vec<String> = path
        .iter()
        .map(|s| match s {
            Seg::Key(k) => (*k).to_string(),
            Seg::Index(i) => i.to_string(),
        })
        .collect();
    parts.join("/")
}

/// An array leaf whose data still lives in the input.
struct ArrayRef<'a> {
    dtype: DType,
    shape: Vec<usize>,
    data: &'a [u8],
    /// Offset of the ext header.
    offset: usize,
    /// Offset of the first data byte.
    data_offset: usize,
}

/// Stage-1 value: the file's structure with borrowed strings and array data.
enum Val<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Complex(C128),
    Array(ArrayRef<'a>),
    Scalar(ArrayRef<'a>),
    List(Vec<Val<'a>>),
    /// Entries as (key, key offset, value), and the map header's offset.
    Map(Vec<(&'a str, usize, Val<'a>)>, usize),
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    /// End of the region being parsed (the input, or the current ext payload).
    end: usize,
    depth: usize,
    path: Vec<Seg<'a>>,
}

impl<'a> Parser<'a> {
    fn path(&self) -> String {
        join(&self.path)
    }

    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// Takes `n` bytes for the item at `offset`, after checking that they are there.
    fn take(&mut self, n: u64, offset: usize, what: &'static str) -> R<&'a [u8]> {
        let available = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= available => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => err(BpError::Truncated {
                offset,
                path: self.path(),
                what,
                needed: n,
                available,
            }),
        }
    }

    fn be(&mut self, n: usize, offset: usize, what: &'static str) -> R<u64> {
        let b = self.take(n as u64, offset, what)?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    fn marker(&mut self, what: &'static str) -> R<(usize, Marker)> {
        let offset = self.pos;
        let b = self.take(1, offset, what)?[0];
        let m = Marker::from_u8(b);
        if m == Marker::Reserved {
            return err(BpError::InvalidMarker {
                offset,
                path: self.path(),
                byte: b,
            });
        }
        Ok((offset, m))
    }

    fn utf8(&self, bytes: &'a [u8], offset: usize) -> R<&'a str> {
        std::str::from_utf8(bytes)
            .map_err(|_| BpError::InvalidUtf8 {
                offset,
                path: self.path(),
            })
            .map_err(Box::new)
    }

    /// Length of a str/bin/array/map/ext whose header starts with marker `m` at `offset`.
    fn len_after(&mut self, m: Marker, offset: usize) -> R<u64> {
        Ok(match m {
            Marker::FixStr(n) | Marker::FixArray(n) | Marker::FixMap(n) => n as u64,
            Marker::Str8 | Marker::Bin8 | Marker::Ext8 => self.be(1, offset, "length")?,
            Marker::Str16 | Marker::Bin16 | Marker::Ext16 | Marker::Array16 | Marker::Map16 => {
                self.be(2, offset, "length")?
            }
            Marker::Str32 | Marker::Bin32 | Marker::Ext32 | Marker::Array32 | Marker::Map32 => {
                self.be(4, offset, "length")?
            }
            Marker::FixExt1 => 1,
            Marker::FixExt2 => 2,
            Marker::FixExt4 => 4,
            Marker::FixExt8 => 8,
            Marker::FixExt16 => 16,
            _ => 0,
        })
    }

    fn enter(&mut self, offset: usize) -> R<()> {
        if self.depth >= MAX_DEPTH {
            return err(BpError::TooDeep {
                offset,
                path: self.path(),
                limit: MAX_DEPTH,
            });
        }
        self.depth += 1;
        Ok(())
    }

    /// Reads an int of any msgpack int form; `None` if the marker is not an int.
    fn int_body(&mut self, m: Marker, offset: usize) -> R<Option<Val<'a>>> {
        Ok(Some(match m {
            Marker::FixPos(v) => Val::Int(v as i64),
            Marker::FixNeg(v) => Val::Int(v as i64),
            Marker::U8 => Val::Int(self.be(1, offset, "uint8")? as i64),
            Marker::U16 => Val::Int(self.be(2, offset, "uint16")? as i64),
            Marker::U32 => Val::Int(self.be(4, offset, "uint32")? as i64),
            Marker::U64 => {
                let v = self.be(8, offset, "uint64")?;
                i64::try_from(v).map_or(Val::UInt(v), Val::Int)
            }
            Marker::I8 => Val::Int(self.be(1, offset, "int8")? as u8 as i8 as i64),
            Marker::I16 => Val::Int(self.be(2, offset, "int16")? as u16 as i16 as i64),
            Marker::I32 => Val::Int(self.be(4, offset, "int32")? as u32 as i32 as i64),
            Marker::I64 => Val::Int(self.be(8, offset, "int64")? as i64),
            _ => return Ok(None),
        }))
    }

    fn value(&mut self) -> R<Val<'a>> {
        let (offset, m) = self.marker("value")?;
        match m {
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                let n = self.len_after(m, offset)?;
                self.list(n, offset)
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                let n = self.len_after(m, offset)?;
                self.map(n, offset)
            }
            _ => self.leaf(m, offset),
        }
    }

    /// A non-container value (kept out of [`Self::value`] so that the recursive frame stays small).
    #[inline(never)]
    fn leaf(&mut self, m: Marker, offset: usize) -> R<Val<'a>> {
        if let Some(v) = self.int_body(m, offset)? {
            return Ok(v);
        }
        Ok(match m {
            Marker::Null => Val::Nil,
            Marker::True => Val::Bool(true),
            Marker::False => Val::Bool(false),
            Marker::F32 => Val::Float(f32::from_bits(self.be(4, offset, "float32")? as u32) as f64),
            Marker::F64 => Val::Float(f64::from_bits(self.be(8, offset, "float64")?)),
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let n = self.len_after(m, offset)?;
                let b = self.take(n, offset, "str")?;
                Val::Str(self.utf8(b, offset)?)
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = self.len_after(m, offset)?;
                Val::Bin(self.take(n, offset, "bin")?)
            }
            _ => {
                let n = self.len_after(m, offset)?;
                self.ext(n, offset)?
            }
        })
    }

    /// Checks that `n` items of at least `min` bytes each can fit in what remains.
    fn fits(&self, n: u64, min: u64, offset: usize, what: &'static str) -> R<usize> {
        let available = self.remaining();
        if n.saturating_mul(min) > available as u64 {
            return err(BpError::Truncated {
                offset,
                path: self.path(),
                what,
                needed: n.saturating_mul(min),
                available,
            });
        }
        Ok(n as usize)
    }

    fn list(&mut self, n: u64, offset: usize) -> R<Val<'a>> {
        let n = self.fits(n, 1, offset, "array items")?;
        self.enter(offset)?;
        let mut items = Vec::with_capacity(n.min(PREALLOC));
        for i in 0..n {
            self.path.push(Seg::Index(i));
            items.push(self.value()?);
            self.path.pop();
        }
        self.depth -= 1;
        Ok(Val::List(items))
    }

    fn map(&mut self, n: u64, offset: usize) -> R<Val<'a>> {
        let n = self.fits(n, 2, offset, "map entries")?;
        self.enter(offset)?;
        let mut entries = Vec::with_capacity(n.min(PREALLOC));
        for _ in 0..n {
            let (koff, key) = self.key()?;
            self.path.push(Seg::Key(key));
            let v = self.value()?;
            self.path.pop();
            entries.push((key, koff, v));
        }
        self.depth -= 1;
        Ok(Val::Map(entries, offset))
    }

    #[inline(never)]
    fn key(&mut self) -> R<(usize, &'a str)> {
        let (koff, km) = self.marker("map key")?;
        match km {
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let len = self.len_after(km, koff)?;
                let b = self.take(len, koff, "str")?;
                Ok((koff, self.utf8(b, koff)?))
            }
            other => err(BpError::NonStringKey {
                offset: koff,
                path: self.path(),
                found: kind_of(other),
            }),
        }
    }

    fn ext(&mut self, len: u64, offset: usize) -> R<Val<'a>> {
        let code = self.take(1, offset, "ext type")?[0] as i8;
        let available = self.remaining();
        if len > available as u64 {
            return err(BpError::Truncated {
                offset,
                path: self.path(),
                what: "ext payload",
                needed: len,
                available,
            });
        }
        let (what, scalar) = match code {
            1 => ("ndarray", false),
            3 => ("numpy scalar", true),
            2 => ("complex", false),
            _ => {
                return err(BpError::UnknownExt {
                    offset,
                    path: self.path(),
                    code,
                })
            }
        };
        let outer_end = self.end;
        self.end = self.pos + len as usize;
        let v = if code == 2 {
            self.complex_payload(offset)?
        } else {
            let a = self.array_payload(offset, what)?;
            if scalar {
                if !a.shape.is_empty() {
                    return err(self.bad(offset, what, format!("shape {:?} is not [] (0-d)", a.shape)));
                }
                Val::Scalar(a)
            } else {
                Val::Array(a)
            }
        };
        if self.pos != self.end {
            return err(BpError::ExtraData {
                offset: self.pos,
                path: self.path(),
                extra: self.end - self.pos,
                what: match code {
                    1 => "ndarray payload",
                    3 => "numpy scalar payload",
                    _ => "complex payload",
                },
            });
        }
        self.end = outer_end;
        Ok(v)
    }

    fn bad(&self, offset: usize, what: &'static str, reason: String) -> BpError {
        BpError::BadPayload {
            offset,
            path: self.path(),
            what,
            reason,
        }
    }

    fn array_header(&mut self, what: &'static str, item: &'static str) -> R<u64> {
        let (off, m) = self.marker(what)?;
        match m {
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => self.len_after(m, off),
            other => err(self.bad(off, what, format!("{item} is a {}, not an array", kind_of(other)))),
        }
    }

    fn bytes_item(&mut self, what: &'static str, item: &'static str) -> R<(usize, &'a [u8])> {
        let (off, m) = self.marker(what)?;
        match m {
            Marker::FixStr(_)
            | Marker::Str8
            | Marker::Str16
            | Marker::Str32
            | Marker::Bin8
            | Marker::Bin16
            | Marker::Bin32 => {
                let n = self.len_after(m, off)?;
                let start = self.pos;
                let b = self.take(n, off, item)?;
                Ok((start, b))
            }
            other => err(self.bad(
                off,
                what,
                format!("{item} is a {}, not str or bin", kind_of(other)),
            )),
        }
    }

    /// `[shape, dtype name, data]`.
    fn array_payload(&mut self, offset: usize, what: &'static str) -> R<ArrayRef<'a>> {
        let n = self.array_header(what, "the payload")?;
        if n != 3 {
            return err(self.bad(
                offset,
                what,
                format!("{n} items, expected 3 (shape, dtype, data)"),
            ));
        }
        let ndim = self.array_header(what, "the shape")?;
        let ndim = self.fits(ndim, 1, offset, "shape dims")?;
        let mut shape = Vec::with_capacity(ndim.min(PREALLOC));
        let mut shape64 = Vec::with_capacity(ndim.min(PREALLOC));
        for _ in 0..ndim {
            let (doff, m) = self.marker(what)?;
            let d = match self.int_body(m, doff)? {
                Some(Val::Int(d)) if d < 0 => {
                    return err(BpError::NegativeDim {
                        offset: doff,
                        path: self.path(),
                        dim: d,
                    })
                }
                Some(Val::Int(d)) => d as u64,
                Some(Val::UInt(d)) => d,
                _ => {
                    return err(self.bad(doff, what, format!("a dimension is a {}, not an int", kind_of(m))))
                }
            };
            shape64.push(d);
            shape.push(usize::try_from(d).unwrap_or(usize::MAX));
        }
        let (name_off, name) = self.bytes_item(what, "dtype name")?;
        let dtype = std::str::from_utf8(name)
            .ok()
            .and_then(DType::from_name)
            .ok_or_else(|| BpError::UnknownDtype {
                offset: name_off,
                path: self.path(),
                name: String::from_utf8_lossy(name).into_owned(),
            })?;
        let (data_offset, data) = self.bytes_item(what, "data")?;
        if !shape_fits(dtype, &shape64) {
            return err(self.bad(offset, what, format!("shape {shape64:?} of {dtype} is too large")));
        }
        let expected = shape64
            .iter()
            .try_fold(dtype.itemsize() as u128, |acc, &d| acc.checked_mul(d as u128));
        if expected != Some(data.len() as u128) {
            return err(BpError::DataLength {
                offset: data_offset,
                path: self.path(),
                dtype,
                shape: shape64,
                expected: expected.and_then(|e| u64::try_from(e).ok()),
                found: data.len(),
            });
        }
        Ok(ArrayRef {
            dtype,
            shape,
            data,
            offset,
            data_offset,
        })
    }

    /// `[re, im]`.
    fn complex_payload(&mut self, offset: usize) -> R<Val<'a>> {
        let n = self.array_header("complex", "the payload")?;
        if n != 2 {
            return err(self.bad(offset, "complex", format!("{n} items, expected 2 (re, im)")));
        }
        let mut parts = [0.0f64; 2];
        for p in &mut parts {
            let (off, m) = self.marker("complex")?;
            *p = match m {
                Marker::F64 => f64::from_bits(self.be(8, off, "float64")?),
                Marker::F32 => f32::from_bits(self.be(4, off, "float32")? as u32) as f64,
                other => {
                    return err(self.bad(
                        off,
                        "complex",
                        format!("a part is a {}, not a float", kind_of(other)),
                    ))
                }
            };
        }
        Ok(Val::Complex(C128::new(parts[0], parts[1])))
    }
}

/// True when an array of `shape` could exist: the product of its non-zero dimensions times the
/// item size fits `isize` (ndarray's own limit; a zero dimension does not excuse the others).
fn shape_fits(dtype: DType, shape: &[u64]) -> bool {
    shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(dtype.itemsize() as u128, |acc, &d| acc.checked_mul(d as u128))
        .is_some_and(|n| n <= isize::MAX as u128)
}

fn kind_of(m: Marker) -> &'static str {
    match m {
        Marker::FixPos(_)
        | Marker::FixNeg(_)
        | Marker::U8
        | Marker::U16
        | Marker::U32
        | Marker::U64
        | Marker::I8
        | Marker::I16
        | Marker::I32
        | Marker::I64 => "int",
        Marker::Null => "nil",
        Marker::True | Marker::False => "bool",
        Marker::F32 | Marker::F64 => "float",
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => "str",
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => "bin",
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => "array",
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => "map",
        Marker::Reserved => "reserved byte",
        _ => "ext",
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<Pytree, BpError> {
    decode_boxed(bytes).map_err(|e| *e)
}

fn decode_boxed(bytes: &[u8]) -> R<Pytree> {
    let mut p = Parser {
        buf: bytes,
        pos: 0,
        end: bytes.len(),
        depth: 0,
        path: Vec::new(),
    };
    let v = p.value()?;
    if p.pos != bytes.len() {
        return err(BpError::ExtraData {
            offset: p.pos,
            path: "/".to_string(),
            extra: bytes.len() - p.pos,
            what: "top-level object",
        });
    }
    let mut path = Vec::new();
    build(v, true, &mut path)
}

fn tensor_of(a: &ArrayRef<'_>, path: &[Seg<'_>]) -> R<Tensor> {
    Tensor::from_le_bytes(a.dtype, &a.shape, a.data).map_err(|e| Box::new(tensor_error(e, a, path)))
}

fn tensor_error(e: TensorError, a: &ArrayRef<'_>, path: &[Seg<'_>]) -> BpError {
    match e {
        TensorError::InvalidBool { index, byte } => BpError::InvalidBool {
            offset: a.data_offset,
            path: join(path),
            index,
            byte,
        },
        other => BpError::BadPayload {
            offset: a.offset,
            path: join(path),
            what: "ndarray",
            reason: other.to_string(),
        },
    }
}

/// Stage 2. `dechunk`: whether a chunked-array map here is joined (BrainPy joins them at the top
/// level and as map values, not inside msgpack arrays).
fn build<'a>(v: Val<'a>, dechunk: bool, path: &mut Vec<Seg<'a>>) -> R<Pytree> {
    match v {
        Val::List(items) => build_list(items, path),
        Val::Map(entries, offset) => build_map(entries, offset, dechunk, path),
        leaf => build_leaf(leaf, path),
    }
}

#[inline(never)]
fn build_list<'a>(items: Vec<Val<'a>>, path: &mut Vec<Seg<'a>>) -> R<Pytree> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        path.push(Seg::Index(i));
        out.push(build(item, false, path)?);
        path.pop();
    }
    Ok(Pytree::List(out))
}

#[inline(never)]
fn build_map<'a>(
    entries: Vec<(&'a str, usize, Val<'a>)>,
    offset: usize,
    dechunk: bool,
    path: &mut Vec<Seg<'a>>,
) -> R<Pytree> {
    if dechunk && entries.iter().any(|(k, _, _)| *k == CHUNKED_KEY) {
        return unchunk(entries, offset, path).map(Pytree::Tensor);
    }
    let mut m = crate::PytreeMap::with_capacity_and_hasher(entries.len(), Default::default());
    for (k, koff, item) in entries {
        path.push(Seg::Key(k));
        let t = build(item, dechunk, path)?;
        path.pop();
        if m.insert(k.to_string(), t).is_some() {
            return err(duplicate(k, koff, path));
        }
    }
    Ok(Pytree::Map(m))
}

#[inline(never)]
fn duplicate(k: &str, koff: usize, path: &[Seg<'_>]) -> BpError {
    BpError::DuplicateKey {
        offset: koff,
        path: join(path),
        key: k.to_string(),
    }
}

#[inline(never)]
fn build_leaf(v: Val<'_>, path: &[Seg<'_>]) -> R<Pytree> {
    Ok(match v {
        Val::Nil => Pytree::None,
        Val::Bool(b) => Pytree::Bool(b),
        Val::Int(i) => Pytree::Int(i),
        Val::UInt(u) => Pytree::UInt(u),
        Val::Float(x) => Pytree::Float(x),
        Val::Str(s) => Pytree::Str(s.to_string()),
        Val::Bin(b) => Pytree::Bytes(b.to_vec()),
        Val::Complex(c) => Pytree::Complex(c),
        Val::Array(a) => Pytree::Tensor(tensor_of(&a, path)?),
        Val::Scalar(a) => Pytree::Scalar(tensor_of(&a, path)?),
        Val::List(_) | Val::Map(..) => unreachable!("containers are built by build()"),
    })
}

/// Reads consecutive slices as one stream.
struct Slices<'s, 'a> {
    parts: &'s [&'a [u8]],
    cur: &'a [u8],
}

impl Read for Slices<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.parts.split_first() {
                Some((first, rest)) => {
                    self.cur = first;
                    self.parts = rest;
                }
                None => return Ok(0),
            }
        }
        self.cur.read(buf)
    }
}

#[inline(never)]
fn unchunk<'a>(entries: Vec<(&'a str, usize, Val<'a>)>, offset: usize, path: &[Seg<'a>]) -> R<Tensor> {
    let bad = |reason: String| BpError::BadChunked {
        offset,
        path: join(path),
        reason,
    };
    let find = |key: &str| entries.iter().find(|(k, _, _)| *k == key).map(|(_, _, v)| v);
    let shape: Vec<u64> = match find("shape") {
        Some(Val::Map(dims, _)) => dims
            .iter()
            .map(|(k, _, d)| match d {
                Val::Int(d) if *d >= 0 => Ok(*d as u64),
                Val::UInt(d) => Ok(*d),
                _ => err(bad(format!("shape entry {k:?} is not a non-negative int"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return err(bad("'shape' is not a map".into())),
        None => return err(bad("no 'shape' entry".into())),
    };
    let chunks = match find("chunks") {
        Some(Val::Map(chunks, _)) => chunks,
        Some(_) => return err(bad("'chunks' is not a map".into())),
        None => return err(bad("no 'chunks' entry".into())),
    };
    let mut dtype = None;
    let mut parts = Vec::with_capacity(chunks.len());
    let mut total: u128 = 0;
    for (k, _, c) in chunks {
        match c {
            Val::Array(a) if a.shape.len() == 1 => {
                if dtype.is_some_and(|d| d != a.dtype) {
                    return err(bad(format!(
                        "chunk {k:?} is {}, earlier chunks are {}",
                        a.dtype,
                        dtype.unwrap_or(a.dtype)
                    )));
                }
                dtype = Some(a.dtype);
                total += a.data.len() as u128;
                parts.push(a.data);
            }
            _ => return err(bad(format!("chunk {k:?} is not a 1-d ndarray"))),
        }
    }
    let dtype = dtype.ok_or_else(|| bad("no chunks".into()))?;
    if !shape_fits(dtype, &shape) {
        return err(bad(format!("shape {shape:?} of {dtype} is too large")));
    }
    let expected = shape
        .iter()
        .try_fold(dtype.itemsize() as u128, |acc, &d| acc.checked_mul(d as u128));
    if expected != Some(total) {
        return err(bad(format!(
            "shape {shape:?} of {dtype} needs {} bytes, the chunks hold {total}",
            expected.map_or("too many".to_string(), |e| e.to_string())
        )));
    }
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect(); // shape_fits: each fits isize
    let mut reader = Slices {
        parts: &parts,
        cur: &[],
    };
    Tensor::read_le(dtype, &shape, &mut reader)
        .map_err(|e| match e {
            TensorError::InvalidBool { index, byte } => BpError::InvalidBool {
                offset,
                path: join(path),
                index,
                byte,
            },
            other => bad(other.to_string()),
        })
        .map_err(Box::new)
}

pub(super) fn looks_like(prefix: &[u8]) -> bool {
    if crate::interop::safetensors::looks_like(prefix) {
        return false;
    }
    let Some(&first) = prefix.first() else {
        return false;
    };
    let is_str = |b: u8| {
        matches!(
            Marker::from_u8(b),
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32
        )
    };
    match Marker::from_u8(first) {
        Marker::FixMap(0) => prefix.len() == 1,
        Marker::FixMap(_) => prefix.get(1).is_none_or(|&b| is_str(b)),
        Marker::Map16 => prefix.get(3).is_none_or(|&b| is_str(b)),
        Marker::Map32 => prefix.get(5).is_none_or(|&b| is_str(b)),
        m @ (Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32) => {
            let at = match m {
                Marker::Ext8 => 2,
                Marker::Ext16 => 3,
                Marker::Ext32 => 5,
                _ => 1,
            };
            prefix.get(at).is_none_or(|&t| (1..=3).contains(&t))
        }
        _ => false,
    }
}
