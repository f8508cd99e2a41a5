//! Export and import of pytrees as safetensors and numpy `.npz` archives.
//!
//! Interface used by `crate::ckpt`: `safetensors::{write_to, decode, looks_like}` and
//! `npz::{write_to, decode, looks_like}`, with errors [`InteropError`].
//!
//! # Layout
//!
//! Every tensor of the tree (a [`Pytree::Tensor`] or a numpy scalar, [`Pytree::Scalar`]) is
//! stored under its tree path joined by `/` (`"net/Lif0/Lif0.V"`; list items by index), so any
//! safetensors or numpy user finds it by name. Keys holding `/` are refused (they would be
//! ambiguous), as is a tree whose root is not a map or list.
//!
//! Everything else — the order of keys, empty maps such as BrainPy's `ExponentialEuler0: {}`,
//! lists, which 0-d tensors are numpy scalars, and the non-tensor leaves (ints, floats, strings,
//! ...) — is kept in a JSON *skeleton* of the tree, so that a tree read back is equal to the tree
//! written. safetensors stores it in the header's `__metadata__` under the key
//! [`SKELETON_KEY`]; npz stores it as the member `__brainstate_pytree__.npy`, a 0-d numpy unicode
//! string (`str(np.load(f)["__brainstate_pytree__"])` gives the JSON). The skeleton is
//! `{"brainstate_pytree": 1, "tree": NODE}` where `NODE` is one of
//!
//! | node | meaning |
//! | --- | --- |
//! | `{"map": [[key, NODE], ...]}` | a map, entries in order |
//! | `{"list": [NODE, ...]}` | a list |
//! | `{"tensor": "a/b"}` / `{"scalar": "a/b"}` | the stored tensor of that name (a numpy scalar when `scalar`) |
//! | `{"int": "-5"}` | an int, as a decimal string (exact for all of i64 and u64) |
//! | `{"float": "0.1"}` | a float: shortest round-trip decimal, `inf`, `-inf`, `nan`, or `nan:<16 hex digits>` for a NaN with another payload (Python's `float()` reads all but the last) |
//! | `{"complex": [re, im]}` | a complex, each part as a float above |
//! | `{"bool": true}`, `{"str": "..."}`, `{"bytes": "<hex>"}`, `{"none": null}` | the leaf |
//!
//! A file without a skeleton (written by other tools) reads as nested maps built by splitting the
//! names on `/`, in file order.
//!
//! # Dtypes
//!
//! safetensors has no complex dtypes: `complex64`/`complex128` tensors are refused with
//! [`InteropError::UnsupportedDtype`]. numpy has no `bfloat16` (ml_dtypes would store it as an
//! opaque 2-byte void type that numpy cannot compute with): `bfloat16` tensors are refused for
//! npz. Nothing is ever cast to another dtype. Safetensors' float8/float4 dtypes are refused on read.

pub mod npz;
pub mod safetensors;

use crate::dtype::{DType, C128};
use crate::pytree::Pytree;
use crate::tensor::{Tensor, TensorError};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The safetensors metadata key (and, with `.npy` and underscores, the npz member) that holds
/// the tree's skeleton.
pub const SKELETON_KEY: &str = "brainstate.pytree";

/// Why a safetensors or npz file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InteropError {
    /// The format cannot hold this dtype (safetensors: complex; npz: bfloat16; on read: a dtype
    /// this crate does not have).
    #[error("at {path}: {format} cannot hold dtype {dtype}")]
    UnsupportedDtype {
        /// Tree path or stored name.
        path: String,
        /// The dtype's name.
        dtype: String,
        /// `safetensors` or `npz`.
        format: &'static str,
    },
    /// A map key holds `/`, which separates path segments in the stored names.
    #[error("at {path}: key {key:?} holds '/', which separates the path segments of stored names")]
    KeyHasSlash {
        /// Path of the map.
        path: String,
        /// The key.
        key: String,
    },
    /// A stored name that this crate reserves.
    #[error("the tree path {0:?} is a name reserved by the format")]
    ReservedName(String),
    /// The root of the tree must be a map or list.
    #[error("the root of the tree is a {0}; safetensors and npz store a map or list of tensors")]
    RootNotContainer(&'static str),
    /// The safetensors file is malformed.
    #[error("malformed safetensors file: {0}")]
    Safetensors(String),
    /// The zip archive of an npz is malformed.
    #[error("malformed npz archive: {0}")]
    Zip(String),
    /// An `.npy` member is malformed.
    #[error("npz member {member:?}: {reason}")]
    Npy {
        /// Member name.
        member: String,
        /// What is wrong.
        reason: String,
    },
    /// The skeleton does not describe a tree.
    #[error("malformed tree skeleton: {0}")]
    BadSkeleton(String),
    /// The skeleton names a tensor the file does not hold.
    #[error("the skeleton names tensor {0:?}, which the file does not hold")]
    MissingTensor(String),
    /// The file holds a tensor the skeleton does not name (or names twice).
    #[error("tensor {0:?} is not named exactly once by the skeleton")]
    UnlistedTensor(String),
    /// A stored name is both a tensor and a prefix of other names.
    #[error("stored name {0:?} is both a tensor and a map of other tensors")]
    KeyConflict(String),
    /// A tensor's bytes do not fit its dtype and shape.
    #[error("tensor {name:?}: {source}")]
    Tensor {
        /// Stored name.
        name: String,
        /// The problem.
        source: TensorError,
    },
    /// Writing failed.
    #[error("writing failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Tensors of a tree in order, with their stored names, and the skeleton.
pub(crate) struct Flat<'t> {
    pub tensors: Vec<(String, &'t Tensor)>,
    pub skeleton: String,
}

fn float_text(x: f64) -> String {
    if x.is_nan() {
        if x.to_bits() == f64::NAN.to_bits() {
            "nan".into()
        } else {
            format!("nan:{:016x}", x.to_bits())
        }
    } else {
        format!("{x:?}")
    }
}

fn parse_float(s: &str) -> Option<f64> {
    if let Some(h) = s.strip_prefix("nan:") {
        return u64::from_str_radix(h, 16)
            .ok()
            .map(f64::from_bits)
            .filter(|x| x.is_nan());
    }
    match s {
        "nan" => Some(f64::NAN),
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok().filter(|x: &f64| x.is_finite()),
    }
}

/// Splits `tree` into its named tensors and its skeleton; `reserved` names may not be used.
pub(crate) fn flatten<'t>(tree: &'t Pytree, reserved: &[&str]) -> Result<Flat<'t>, InteropError> {
    if !matches!(tree, Pytree::Map(_) | Pytree::List(_)) {
        return Err(InteropError::RootNotContainer(tree.kind()));
    }
    fn walk<'t>(
        t: &'t Pytree,
        path: &mut Vec<String>,
        out: &mut Vec<(String, &'t Tensor)>,
        reserved: &[&str],
    ) -> Result<Value, InteropError> {
        let name = |path: &[String]| path.join("/");
        Ok(match t {
            Pytree::Map(m) => {
                let mut entries = Vec::with_capacity(m.len());
                for (k, v) in m {
                    if k.contains('/') {
                        return Err(InteropError::KeyHasSlash {
                            path: if path.is_empty() { "/".into() } else { name(path) },
                            key: k.clone(),
                        });
                    }
                    path.push(k.clone());
                    entries.push(json!([k, walk(v, path, out, reserved)?]));
                    path.pop();
                }
                json!({ "map": entries })
            }
            Pytree::List(l) => {
                let mut items = Vec::with_capacity(l.len());
                for (i, v) in l.iter().enumerate() {
                    path.push(i.to_string());
                    items.push(walk(v, path, out, reserved)?);
                    path.pop();
                }
                json!({ "list": items })
            }
            Pytree::Tensor(x) | Pytree::Scalar(x) => {
                let n = name(path);
                if reserved.contains(&n.as_str()) {
                    return Err(InteropError::ReservedName(n));
                }
                out.push((n.clone(), x));
                if matches!(t, Pytree::Scalar(_)) {
                    json!({ "scalar": n })
                } else {
                    json!({ "tensor": n })
                }
            }
            Pytree::Int(i) => json!({ "int": i.to_string() }),
            Pytree::UInt(u) => json!({ "int": u.to_string() }),
            Pytree::Float(x) => json!({ "float": float_text(*x) }),
            Pytree::Complex(c) => json!({ "complex": [float_text(c.re), float_text(c.im)] }),
            Pytree::Bool(b) => json!({ "bool": b }),
            Pytree::Str(s) => json!({ "str": s }),
            Pytree::Bytes(b) => {
                json!({ "bytes": b.iter().map(|x| format!("{x:02x}")).collect::<String>() })
            }
            Pytree::None => json!({ "none": null }),
        })
    }
    let mut tensors = Vec::new();
    let node = walk(tree, &mut Vec::new(), &mut tensors, reserved)?;
    let skeleton = json!({ "brainstate_pytree": 1, "tree": node }).to_string();
    Ok(Flat { tensors, skeleton })
}

/// Rebuilds a tree from its skeleton and the file's tensors (each must be used exactly once).
pub(crate) fn unflatten(
    skeleton: &str,
    mut tensors: HashMap<String, Tensor>,
) -> Result<Pytree, InteropError> {
    let bad = |m: &str| InteropError::BadSkeleton(m.to_string());
    let v: Value = serde_json::from_str(skeleton).map_err(|e| bad(&e.to_string()))?;
    if v.get("brainstate_pytree").and_then(Value::as_u64) != Some(1) {
        return Err(bad("no \"brainstate_pytree\": 1 version field"));
    }
    let root = v.get("tree").ok_or_else(|| bad("no \"tree\""))?;
    // Iterative depth guard: serde_json already refuses nesting beyond 128 levels.
    fn node(v: &Value, tensors: &mut HashMap<String, Tensor>) -> Result<Pytree, InteropError> {
        let bad = |m: String| InteropError::BadSkeleton(m);
        let obj = v
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| bad(format!("node {v} is not a one-key object")))?;
        let (tag, x) = obj.iter().next().expect("one key");
        let s = || {
            x.as_str()
                .ok_or_else(|| bad(format!("{tag} node {x} is not a string")))
        };
        let float = |x: &Value| {
            x.as_str()
                .and_then(parse_float)
                .ok_or_else(|| bad(format!("{x} is not a float text")))
        };
        Ok(match tag.as_str() {
            "map" => {
                let entries = x.as_array().ok_or_else(|| bad("map node is not a list".into()))?;
                let mut m = crate::PytreeMap::with_capacity_and_hasher(entries.len(), Default::default());
                for e in entries {
                    let (k, val) = match e.as_array().map(Vec::as_slice) {
                        Some([Value::String(k), val]) => (k, val),
                        _ => return Err(bad(format!("map entry {e} is not [key, node]"))),
                    };
                    if m.insert(k.clone(), node(val, tensors)?).is_some() {
                        return Err(bad(format!("duplicate key {k:?}")));
                    }
                }
                Pytree::Map(m)
            }
            "list" => {
                let items = x
                    .as_array()
                    .ok_or_else(|| bad("list node is not a list".into()))?;
                Pytree::List(items.iter().map(|i| node(i, tensors)).collect::<Result<_, _>>()?)
            }
            "tensor" | "scalar" => {
                let name = s()?;
                let t = tensors
                    .remove(name)
                    .ok_or_else(|| InteropError::MissingTensor(name.to_string()))?;
                if tag == "scalar" {
                    if t.ndim() != 0 {
                        return Err(bad(format!("scalar {name:?} has shape {:?}", t.shape())));
                    }
                    Pytree::Scalar(t)
                } else {
                    Pytree::Tensor(t)
                }
            }
            "int" => {
                let t = s()?;
                match (t.parse::<i64>(), t.parse::<u64>()) {
                    (Ok(i), _) => Pytree::Int(i),
                    (_, Ok(u)) => Pytree::UInt(u),
                    _ => return Err(bad(format!("int {t:?}"))),
                }
            }
            "float" => Pytree::Float(float(x)?),
            "complex" => match x.as_array().map(Vec::as_slice) {
                Some([re, im]) => Pytree::Complex(C128::new(float(re)?, float(im)?)),
                _ => return Err(bad(format!("complex {x}"))),
            },
            "bool" => Pytree::Bool(x.as_bool().ok_or_else(|| bad(format!("bool {x}")))?),
            "str" => Pytree::Str(s()?.to_string()),
            "bytes" => {
                let h = s()?;
                let bytes: Option<Vec<u8>> = (h.len() % 2 == 0)
                    .then(|| {
                        (0..h.len())
                            .step_by(2)
                            .map(|i| h.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
                            .collect()
                    })
                    .flatten();
                Pytree::Bytes(bytes.ok_or_else(|| bad(format!("bytes {h:?}")))?)
            }
            "none" if x.is_null() => Pytree::None,
            _ => return Err(bad(format!("unknown node {v}"))),
        })
    }
    let tree = node(root, &mut tensors)?;
    if let Some(name) = tensors.keys().min() {
        return Err(InteropError::UnlistedTensor(name.clone()));
    }
    Ok(tree)
}

/// Nested maps from `/`-separated names, in the given order (files without a skeleton).
pub(crate) fn from_names(named: Vec<(String, Tensor)>) -> Result<Pytree, InteropError> {
    let mut root = Pytree::map();
    for (name, t) in named {
        let mut cur = &mut root;
        let parts: Vec<&str> = name.split('/').collect();
        let (last, dirs) = parts.split_last().expect("split yields one part");
        for d in dirs {
            let Pytree::Map(m) = cur else {
                unreachable!("only maps are descended")
            };
            cur = m.entry(d.to_string()).or_insert_with(Pytree::map);
            if !matches!(cur, Pytree::Map(_)) {
                return Err(InteropError::KeyConflict(name));
            }
        }
        let Pytree::Map(m) = cur else {
            unreachable!("only maps are descended")
        };
        if m.insert(last.to_string(), Pytree::Tensor(t)).is_some() {
            return Err(InteropError::KeyConflict(name));
        }
    }
    Ok(root)
}

/// A tensor from stored bytes, refusing shapes ndarray could not hold (a zero dimension does
/// not excuse a huge one) before anything is allocated.
pub(crate) fn tensor_from(
    name: &str,
    dtype: DType,
    shape: &[usize],
    bytes: &[u8],
) -> Result<Tensor, InteropError> {
    let fits = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(dtype.itemsize() as u128, |acc, &d| acc.checked_mul(d as u128))
        .is_some_and(|n| n <= isize::MAX as u128);
    if !fits {
        return Err(InteropError::Tensor {
            name: name.to_string(),
            source: TensorError::Overflow {
                dtype,
                shape: shape.to_vec(),
            },
        });
    }
    Tensor::from_le_bytes(dtype, shape, bytes).map_err(|source| InteropError::Tensor {
        name: name.to_string(),
        source,
    })
}
