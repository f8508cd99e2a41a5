//! numpy `.npz` archives: a zip of `.npy` files, as `np.savez` writes and `np.load` reads.
//!
//! Tensors are stored as `<tree path joined by '/'>.npy` (uncompressed, like `np.savez`); the
//! tree's skeleton is the member `__brainstate_pytree__.npy` (see the [parent module](super)).
//! Reading accepts stored and deflated members (`np.savez_compressed`), npy format versions 1-3,
//! little-endian and byte-order-free dtypes, and Fortran-order arrays (turned into C order).
//! A deflated member is inflated up to its declared size: unlike stored data, that may exceed
//! the archive's size.

use super::{flatten, from_names, tensor_from, unflatten, InteropError};
use crate::dtype::{DType, C128, C64};
use crate::pytree::Pytree;
use crate::tensor::{Storable, Tensor};
use half::{bf16, f16};
use std::io::{Cursor, Read, Write};

/// The member holding the skeleton (without `.npy`).
pub const SKELETON_MEMBER: &str = "__brainstate_pytree__";

fn descr(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::F16 => "<f2",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::C64 => "<c8",
        DType::C128 => "<c16",
        DType::BF16 => return None,
    })
}

fn dtype_of(descr: &str) -> Option<DType> {
    let (order, rest) = descr.split_at(descr.len().min(1));
    if !matches!(order, "<" | "|" | "=") {
        return None;
    }
    DType::ALL
        .into_iter()
        .find(|&d| super::npz::descr(d).is_some_and(|x| &x[1..] == rest))
}

/// An npy file: header then raw bytes.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad with spaces and a newline so that magic + version + length + dict is a multiple of 64.
    let (prefix, v1) = if dict.len() + 11 <= 65535 {
        (10, true)
    } else {
        (12, false)
    };
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    dict.push_str(&" ".repeat(total - prefix - dict.len() - 1));
    dict.push('\n');
    let mut h = b"\x93NUMPY".to_vec();
    if v1 {
        h.extend([1, 0]);
        h.extend((dict.len() as u16).to_le_bytes());
    } else {
        h.extend([2, 0]);
        h.extend((dict.len() as u32).to_le_bytes());
    }
    h.extend(dict.as_bytes());
    h
}

/// Writes `tree` as an npz archive (members: tree paths joined by `/`, plus the skeleton).
pub fn write_to(tree: &Pytree, w: &mut dyn Write) -> Result<(), InteropError> {
    let flat = flatten(tree, &[SKELETON_MEMBER])?;
    for (name, t) in &flat.tensors {
        if descr(t.dtype()).is_none() {
            return Err(InteropError::UnsupportedDtype {
                path: name.clone(),
                dtype: t.dtype().name().into(),
                format: "npz",
            });
        }
    }
    let zip_err = |e: zip::result::ZipError| InteropError::Zip(e.to_string());
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    let member = |zw: &mut zip::ZipWriter<Cursor<Vec<u8>>>, name: &str, head: &[u8], data: &[u8]| {
        let big = (head.len() + data.len()) as u64 >= u32::MAX as u64;
        zw.start_file(format!("{name}.npy"), opts.large_file(big))
            .map_err(zip_err)?;
        zw.write_all(head)?;
        zw.write_all(data)?;
        Ok::<(), InteropError>(())
    };
    for (name, t) in &flat.tensors {
        let head = npy_header(descr(t.dtype()).expect("checked"), t.shape());
        member(&mut zw, name, &head, &t.le_bytes())?;
    }
    // The skeleton as a 0-d numpy unicode string (UTF-32LE).
    let chars: Vec<u8> = flat
        .skeleton
        .chars()
        .flat_map(|c| (c as u32).to_le_bytes())
        .collect();
    let head = npy_header(&format!("<U{}", flat.skeleton.chars().count()), &[]);
    member(&mut zw, SKELETON_MEMBER, &head, &chars)?;
    let bytes = zw.finish().map_err(zip_err)?.into_inner();
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// A parsed npy header.
struct NpyHeader {
    descr: String,
    fortran: bool,
    shape: Vec<usize>,
}

fn npy_err(member: &str, reason: impl Into<String>) -> InteropError {
    InteropError::Npy {
        member: member.to_string(),
        reason: reason.into(),
    }
}

/// Parses the npy preamble; returns the header and the data's start.
fn parse_npy(member: &str, b: &[u8]) -> Result<(NpyHeader, usize), InteropError> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(npy_err(member, "no npy magic"));
    }
    let (len, start): (usize, usize) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(npy_err(member, format!("npy version {v} unsupported"))),
    };
    let text = b
        .get(start..start.saturating_add(len))
        .ok_or_else(|| npy_err(member, format!("header of {len} bytes exceeds the member")))?;
    let text = std::str::from_utf8(text).map_err(|_| npy_err(member, "header is not UTF-8"))?;
    let h =
        parse_dict(text).ok_or_else(|| npy_err(member, format!("unreadable header {:?}", text.trim())))?;
    Ok((h, start + len))
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_dict(s: &str) -> Option<NpyHeader> {
    let mut p = Lit {
        s: s.trim().as_bytes(),
        i: 0,
    };
    p.eat(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}').is_some() {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            _ => return None,
        }
        p.ws();
        if p.eat(b',').is_none() {
            p.ws();
            p.eat(b'}')?;
            break;
        }
    }
    Some(NpyHeader {
        descr: descr?,
        fortran: fortran?,
        shape: shape?,
    })
}

struct Lit<'s> {
    s: &'s [u8],
    i: usize,
}

impl Lit<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.s.get(self.i) == Some(&c)).then(|| self.i += 1)
    }
    fn string(&mut self) -> Option<String> {
        let q = *self.s.get(self.i).filter(|&&q| q == b'\'' || q == b'"')?;
        let start = self.i + 1;
        let len = self.s[start..].iter().position(|&c| c == q)?;
        self.i = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec()).ok()
    }
    fn boolean(&mut self) -> Option<bool> {
        for (w, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(w) {
                self.i += w.len();
                return Some(v);
            }
        }
        None
    }
    fn tuple(&mut self) -> Option<Vec<usize>> {
        self.eat(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')').is_some() {
                return Some(dims);
            }
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let d = std::str::from_utf8(&self.s[start..self.i]).ok()?;
            // numpy may write `2L` in old files
            if self.s.get(self.i) == Some(&b'L') {
                self.i += 1;
            }
            dims.push(d.parse().ok()?);
            self.ws();
            if self.eat(b',').is_none() {
                self.ws();
                self.eat(b')')?;
                return Some(dims);
            }
        }
    }
}

fn transpose_to_c(name: &str, t: Tensor) -> Result<Tensor, InteropError> {
    fn go<T: Storable>(t: &Tensor) -> Tensor {
        let a = t.as_array::<T>().expect("dtype matched");
        Tensor::from_array(a.reversed_axes().as_standard_layout().into_owned())
    }
    let _ = name;
    Ok(match t.dtype() {
        DType::Bool => go::<bool>(&t),
        DType::U8 => go::<u8>(&t),
        DType::U16 => go::<u16>(&t),
        DType::U32 => go::<u32>(&t),
        DType::U64 => go::<u64>(&t),
        DType::I8 => go::<i8>(&t),
        DType::I16 => go::<i16>(&t),
        DType::I32 => go::<i32>(&t),
        DType::I64 => go::<i64>(&t),
        DType::F16 => go::<f16>(&t),
        DType::BF16 => go::<bf16>(&t),
        DType::F32 => go::<f32>(&t),
        DType::F64 => go::<f64>(&t),
        DType::C64 => go::<C64>(&t),
        DType::C128 => go::<C128>(&t),
    })
}

fn read_npy(member: &str, b: &[u8]) -> Result<Tensor, InteropError> {
    let (h, start) = parse_npy(member, b)?;
    let dtype = dtype_of(&h.descr).ok_or_else(|| InteropError::UnsupportedDtype {
        path: member.to_string(),
        dtype: h.descr.clone(),
        format: "npz",
    })?;
    let data = &b[start..];
    if h.fortran && h.shape.len() > 1 {
        let rev: Vec<usize> = h.shape.iter().rev().copied().collect();
        let t = tensor_from(member, dtype, &rev, data)?;
        transpose_to_c(member, t)
    } else {
        tensor_from(member, dtype, &h.shape, data)
    }
}

/// The skeleton member: a 0-d `<U{n}` array (UTF-32LE).
fn read_skeleton(b: &[u8]) -> Result<String, InteropError> {
    let m = SKELETON_MEMBER;
    let (h, start) = parse_npy(m, b)?;
    let n: usize = h
        .descr
        .strip_prefix("<U")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            npy_err(
                m,
                format!("dtype {} is not a little-endian unicode string", h.descr),
            )
        })?;
    if !h.shape.is_empty() || b.len() - start != n.saturating_mul(4) {
        return Err(npy_err(m, "not one string of the declared length"));
    }
    b[start..]
        .chunks_exact(4)
        .map(|c| char::from_u32(u32::from_le_bytes(c.try_into().expect("4 bytes"))))
        .take_while(|c| *c != Some('\0'))
        .collect::<Option<String>>()
        .ok_or_else(|| npy_err(m, "invalid code point"))
}

/// Decodes a whole npz archive. With a brainstate skeleton the tree comes back as written;
/// without one, as nested maps from the `/`-separated member names in archive order.
pub fn decode(bytes: &[u8]) -> Result<Pytree, InteropError> {
    let zip_err = |e: zip::result::ZipError| InteropError::Zip(e.to_string());
    let mut z = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_err)?;
    let mut named = Vec::with_capacity(z.len().min(1024));
    let mut skeleton = None;
    for i in 0..z.len() {
        let mut f = z.by_index(i).map_err(zip_err)?;
        let full = f.name().to_string();
        let name = full
            .strip_suffix(".npy")
            .ok_or_else(|| npy_err(&full, "member is not an .npy file"))?
            .to_string();
        let declared = f.size();
        let mut buf = Vec::new();
        // Grows with the data actually inflated; never more than the declared size (+1 to notice a lie).
        (&mut f)
            .take(declared.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| npy_err(&full, e.to_string()))?;
        if buf.len() as u64 != declared {
            return Err(npy_err(
                &full,
                format!("holds {} bytes, declares {declared}", buf.len()),
            ));
        }
        if name == SKELETON_MEMBER {
            skeleton = Some(read_skeleton(&buf)?);
        } else {
            let t = read_npy(&full, &buf)?;
            named.push((name, t));
        }
    }
    match skeleton {
        Some(s) => unflatten(&s, named.into_iter().collect()),
        None => from_names(named),
    }
}

/// True when `prefix` may start an npz archive: a zip local file header (`PK\x03\x04`) or the
/// end record of an empty zip (`PK\x05\x06`).
pub fn looks_like(prefix: &[u8]) -> bool {
    prefix.starts_with(b"PK\x03\x04") || prefix.starts_with(b"PK\x05\x06")
}
