//! The writer: [`Pytree`] -> msgpack bytes exactly as BrainPy (msgpack-python) writes them.

use super::{err, BpError, MAX_CHUNK_SIZE, MAX_DEPTH, R};
use crate::pytree::Pytree;
use crate::tensor::Tensor;
use rmp::encode;
use std::io::{BufWriter, Write};

/// Options of the BrainPy writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOptions {
    /// Arrays of more than this many bytes are written as chunked-array maps with chunks of
    /// `max(1, max_chunk_bytes / itemsize)` elements. BrainPy's value is [`MAX_CHUNK_SIZE`]
    /// (2^30); a smaller value reproduces files written with a patched `MAX_CHUNK_SIZE`.
    pub max_chunk_bytes: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            max_chunk_bytes: MAX_CHUNK_SIZE,
        }
    }
}

/// Writes `tree` to `w` in BrainPy's format with `opts`.
pub fn write_to_with(tree: &Pytree, w: &mut dyn Write, opts: &WriteOptions) -> Result<(), BpError> {
    write_boxed(tree, w, opts).map_err(|e| *e)
}

fn write_boxed(tree: &Pytree, w: &mut dyn Write, opts: &WriteOptions) -> R<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, w);
    let mut wr = Writer {
        out: &mut out,
        opts,
        path: Vec::new(),
    };
    wr.value(tree, 0)?;
    out.flush().map_err(BpError::from)?;
    Ok(())
}

/// `tree` in BrainPy's format, as bytes.
pub fn to_vec(tree: &Pytree) -> Result<Vec<u8>, BpError> {
    to_vec_with(tree, &WriteOptions::default())
}

/// `tree` in BrainPy's format with `opts`, as bytes.
pub fn to_vec_with(tree: &Pytree, opts: &WriteOptions) -> Result<Vec<u8>, BpError> {
    // Reserve about the file's size up front, so large arrays are not copied by regrowth.
    let mut estimate = 0usize;
    tree.visit_leaves(&mut |path, leaf| {
        let data = match leaf {
            Pytree::Tensor(t) | Pytree::Scalar(t) => t.nbytes(),
            Pytree::Str(s) => s.len(),
            Pytree::Bytes(b) => b.len(),
            _ => 0,
        };
        let keys: usize = path.iter().map(|k| k.len() + 5).sum();
        estimate = estimate.saturating_add(data + keys + 64);
    });
    let mut v = Vec::with_capacity(estimate);
    write_to_with(tree, &mut v, opts)?;
    Ok(v)
}

fn io(e: encode::ValueWriteError<std::io::Error>) -> BpError {
    match e {
        encode::ValueWriteError::InvalidMarkerWrite(e) | encode::ValueWriteError::InvalidDataWrite(e) => {
            BpError::Io(e)
        }
    }
}

struct Writer<'w, W: Write> {
    out: &'w mut W,
    opts: &'w WriteOptions,
    path: Vec<String>,
}

impl<W: Write> Writer<'_, W> {
    fn path(&self) -> String {
        if self.path.is_empty() {
            "/".into()
        } else {
            self.path.join("/")
        }
    }

    fn len32(&self, len: usize, what: &'static str) -> R<u32> {
        u32::try_from(len)
            .map_err(|_| BpError::TooLarge {
                path: self.path(),
                what,
                len: len as u64,
            })
            .map_err(Box::new)
    }

    fn str(&mut self, s: &str) -> R<()> {
        let n = self.len32(s.len(), "string")?;
        encode::write_str_len(self.out, n).map_err(io)?;
        self.out.write_all(s.as_bytes()).map_err(BpError::from)?;
        Ok(())
    }

    fn uint(&mut self, v: u64) -> R<()> {
        encode::write_uint(self.out, v).map_err(io)?;
        Ok(())
    }

    fn map_len(&mut self, n: usize) -> R<()> {
        let n = self.len32(n, "map")?;
        encode::write_map_len(self.out, n).map_err(io)?;
        Ok(())
    }

    fn value(&mut self, t: &Pytree, depth: usize) -> R<()> {
        match t {
            Pytree::Map(m) => {
                let depth = self.enter(depth)?;
                self.map_len(m.len())?;
                for (k, v) in m {
                    self.str(k)?;
                    self.path.push(k.clone());
                    self.value(v, depth)?;
                    self.path.pop();
                }
            }
            Pytree::List(l) => {
                let depth = self.enter(depth)?;
                self.map_len(l.len())?;
                for (i, v) in l.iter().enumerate() {
                    let k = i.to_string();
                    self.str(&k)?;
                    self.path.push(k);
                    self.value(v, depth)?;
                    self.path.pop();
                }
            }
            leaf => self.leaf(leaf)?,
        }
        Ok(())
    }

    /// A non-container value (kept out of [`Self::value`] so that the recursive frame stays small).
    #[inline(never)]
    fn leaf(&mut self, t: &Pytree) -> R<()> {
        match t {
            Pytree::Tensor(x) => {
                if x.nbytes() > self.opts.max_chunk_bytes {
                    self.chunked(x)?;
                } else {
                    self.array(x, 1, x.shape(), &x.le_bytes())?;
                }
            }
            Pytree::Scalar(x) => {
                if x.ndim() != 0 {
                    return err(BpError::ScalarNotZeroD {
                        path: self.path(),
                        shape: x.shape().to_vec(),
                    });
                }
                self.array(x, 3, &[], &x.le_bytes())?;
            }
            Pytree::Int(i) => {
                encode::write_sint(self.out, *i).map_err(io)?;
            }
            Pytree::UInt(u) => self.uint(*u)?,
            Pytree::Float(x) => encode::write_f64(self.out, *x).map_err(io)?,
            Pytree::Complex(c) => {
                // payload: 92 cb <re> cb <im> = 19 bytes
                encode::write_ext_meta(self.out, 19, 2).map_err(io)?;
                encode::write_array_len(self.out, 2).map_err(io)?;
                encode::write_f64(self.out, c.re).map_err(io)?;
                encode::write_f64(self.out, c.im).map_err(io)?;
            }
            Pytree::Bool(b) => encode::write_bool(self.out, *b).map_err(BpError::Io)?,
            Pytree::Str(s) => self.str(s)?,
            Pytree::Bytes(b) => {
                let n = self.len32(b.len(), "bytes")?;
                encode::write_bin_len(self.out, n).map_err(io)?;
                self.out.write_all(b).map_err(BpError::from)?;
            }
            Pytree::None => encode::write_nil(self.out).map_err(BpError::Io)?,
            Pytree::Map(_) | Pytree::List(_) => unreachable!("containers are written by value()"),
        }
        Ok(())
    }

    fn enter(&self, depth: usize) -> R<usize> {
        if depth >= MAX_DEPTH {
            return err(BpError::TooDeep {
                offset: 0,
                path: self.path(),
                limit: MAX_DEPTH,
            });
        }
        Ok(depth + 1)
    }

    /// An ext of type `code` with payload `[shape, dtype name, data]`.
    fn array(&mut self, x: &Tensor, code: i8, shape: &[usize], data: &[u8]) -> R<()> {
        let mut head = Vec::with_capacity(32);
        let n = self.len32(data.len(), "array data")?;
        encode::write_array_len(&mut head, 3).map_err(io)?;
        encode::write_array_len(&mut head, shape.len() as u32).map_err(io)?;
        for &d in shape {
            encode::write_uint(&mut head, d as u64).map_err(io)?;
        }
        let name = x.dtype().name();
        encode::write_str(&mut head, name).map_err(io)?;
        encode::write_bin_len(&mut head, n).map_err(io)?;
        let payload = self.len32(head.len() + data.len(), "ext payload")?;
        encode::write_ext_meta(self.out, payload, code).map_err(io)?;
        self.out.write_all(&head).map_err(BpError::from)?;
        self.out.write_all(data).map_err(BpError::from)?;
        Ok(())
    }

    /// BrainPy's chunked-array map.
    fn chunked(&mut self, x: &Tensor) -> R<()> {
        let itemsize = x.dtype().itemsize();
        let per = (self.opts.max_chunk_bytes / itemsize).max(1);
        let bytes = x.le_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(per * itemsize).collect();
        self.map_len(3)?;
        self.str("__msgpack_chunked_array__")?;
        encode::write_bool(self.out, true).map_err(BpError::Io)?;
        self.str("shape")?;
        self.map_len(x.ndim())?;
        for (i, &d) in x.shape().iter().enumerate() {
            self.str(&i.to_string())?;
            self.uint(d as u64)?;
        }
        self.str("chunks")?;
        self.map_len(chunks.len())?;
        for (i, c) in chunks.iter().enumerate() {
            self.str(&i.to_string())?;
            self.array(x, 1, &[c.len() / itemsize], c)?;
        }
        Ok(())
    }
}
