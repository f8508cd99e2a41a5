//! A checkpoint tree as a flat list of entries: leaves with their dtype, shape, size and raw
//! bytes, plus empty maps and lists (which hold no leaf but are part of the structure, such as
//! BrainPy's `'Dense0': {}`).

use brainstate_core::{Pytree, Tensor};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// One entry of a flattened tree: a leaf, or an empty container.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Keys from the root (list indices as decimal strings).
    pub path: Vec<String>,
    /// The value: a leaf, or an empty `Map` / `List`.
    pub value: &'a Pytree,
}

impl Entry<'_> {
    /// The path joined with `/`, as `show` takes it.
    pub fn path_text(&self) -> String {
        self.path.join("/")
    }

    /// True for an empty map or list (no leaf).
    pub fn is_container(&self) -> bool {
        matches!(self.value, Pytree::Map(_) | Pytree::List(_))
    }
}

/// Every leaf and every empty container of `tree`, depth first, in the tree's order.
pub fn entries(tree: &Pytree) -> Vec<Entry<'_>> {
    fn walk<'a>(t: &'a Pytree, path: &mut Vec<String>, out: &mut Vec<Entry<'a>>) {
        match t {
            Pytree::Map(m) if !m.is_empty() => {
                for (k, v) in m {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            Pytree::List(l) if !l.is_empty() => {
                for (i, v) in l.iter().enumerate() {
                    path.push(i.to_string());
                    walk(v, path, out);
                    path.pop();
                }
            }
            other => out.push(Entry {
                path: path.clone(),
                value: other,
            }),
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// What a leaf is, in the terms of `inspect --json`.
///
/// Python numbers are described as the 0-d arrays numpy would make of them (`int` -> `int64`,
/// `float` -> `float64`, `complex` -> `complex128`, `bool` -> `bool`); strings and bytes have no
/// dtype and no shape, and their raw bytes are their UTF-8 or byte content.
#[derive(Debug)]
pub struct LeafInfo<'a> {
    /// `tensor`, `scalar` (a numpy scalar), `int`, `float`, `complex`, `bool`, `str`, `bytes`,
    /// `none`, or for empty containers `map` / `list`.
    pub kind: &'static str,
    /// numpy's dtype name, if the leaf has one.
    pub dtype: Option<&'static str>,
    /// The shape, if the leaf has one (`[]` for 0-d).
    pub shape: Option<Vec<usize>>,
    /// The raw little-endian, row-major bytes.
    pub bytes: Cow<'a, [u8]>,
}

impl<'a> LeafInfo<'a> {
    /// Describes a leaf or an empty container.
    pub fn of(value: &'a Pytree) -> LeafInfo<'a> {
        let tensor = |kind, t: &'a Tensor| LeafInfo {
            kind,
            dtype: Some(t.dtype().name()),
            shape: Some(t.shape().to_vec()),
            bytes: t.le_bytes(),
        };
        let number = |kind, dtype, bytes: Vec<u8>| LeafInfo {
            kind,
            dtype: Some(dtype),
            shape: Some(Vec::new()),
            bytes: Cow::Owned(bytes),
        };
        let shapeless = |kind, bytes: Cow<'a, [u8]>| LeafInfo {
            kind,
            dtype: None,
            shape: None,
            bytes,
        };
        match value {
            Pytree::Tensor(t) => tensor("tensor", t),
            Pytree::Scalar(t) => tensor("scalar", t),
            Pytree::Int(i) => number("int", "int64", i.to_le_bytes().to_vec()),
            Pytree::UInt(u) => number("int", "uint64", u.to_le_bytes().to_vec()),
            Pytree::Float(x) => number("float", "float64", x.to_le_bytes().to_vec()),
            Pytree::Complex(c) => {
                let mut b = c.re.to_le_bytes().to_vec();
                b.extend_from_slice(&c.im.to_le_bytes());
                number("complex", "complex128", b)
            }
            Pytree::Bool(b) => number("bool", "bool", vec![u8::from(*b)]),
            Pytree::Str(s) => shapeless("str", Cow::Borrowed(s.as_bytes())),
            Pytree::Bytes(b) => shapeless("bytes", Cow::Borrowed(b)),
            Pytree::None => shapeless("none", Cow::Borrowed(&[])),
            Pytree::Map(_) => shapeless("map", Cow::Borrowed(&[])),
            Pytree::List(_) => shapeless("list", Cow::Borrowed(&[])),
        }
    }

    /// Size of the raw bytes.
    pub fn nbytes(&self) -> usize {
        self.bytes.len()
    }

    /// Lower-case hex SHA-256 of the raw bytes.
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }

    /// `float32[256, 10]`, `int64[]`, `str`, `{}`.
    pub fn type_text(&self) -> String {
        match (&self.dtype, &self.shape) {
            (Some(d), Some(s)) => format!("{d}{}", shape_text(s)),
            _ => match self.kind {
                "map" => "{}".into(),
                "list" => "[]".into(),
                k => k.into(),
            },
        }
    }
}

/// `[256, 10]`; `[]` for 0-d.
pub fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One leaf in `inspect --json`.
#[derive(Debug, Serialize)]
pub struct JsonLeaf {
    /// Keys from the root.
    pub path: Vec<String>,
    /// See [`LeafInfo::kind`].
    pub kind: &'static str,
    /// numpy dtype name or null.
    pub dtype: Option<&'static str>,
    /// Shape or null.
    pub shape: Option<Vec<usize>>,
    /// Size of the raw bytes.
    pub nbytes: usize,
    /// SHA-256 of the raw little-endian, row-major bytes.
    pub sha256: String,
}

/// The document `inspect --json` prints.
#[derive(Debug, Serialize)]
pub struct JsonDoc {
    /// `native`, `bp`, `safetensors` or `npz`.
    pub format: &'static str,
    /// Every leaf, depth first (empty containers are not leaves and are left out).
    pub leaves: Vec<JsonLeaf>,
}

impl JsonDoc {
    /// Builds the document for `tree` read in `format`.
    pub fn new(format: &'static str, tree: &Pytree) -> JsonDoc {
        let leaves = entries(tree)
            .into_iter()
            .filter(|e| !e.is_container())
            .map(|e| {
                let info = LeafInfo::of(e.value);
                JsonLeaf {
                    kind: info.kind,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    nbytes: info.nbytes(),
                    sha256: info.sha256(),
                    path: e.path,
                }
            })
            .collect();
        JsonDoc { format, leaves }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brainstate_core::pytree;
    use ndarray::array;

    #[test]
    fn entries_keep_empty_maps_and_order() {
        let t = pytree! {
            "net" => pytree! { "SNN0" => Pytree::map(), "Lif0" => pytree! { "Lif0.V" => array![1.0f32, 2.0] } },
            "epoch_i" => 3,
            "l" => Pytree::List(vec![Pytree::None]),
        };
        let paths: Vec<String> = entries(&t).iter().map(Entry::path_text).collect();
        assert_eq!(paths, ["net/SNN0", "net/Lif0/Lif0.V", "epoch_i", "l/0"]);
    }

    #[test]
    fn leaf_info_of_numbers_and_tensors() {
        let t = Pytree::from(array![1.0f32, 2.0]);
        let i = LeafInfo::of(&t);
        assert_eq!((i.kind, i.dtype, i.nbytes()), ("tensor", Some("float32"), 8));
        assert_eq!(i.type_text(), "float32[2]");
        // sha256 of the 8 bytes 00 00 80 3f 00 00 00 40, computed with Python's hashlib.
        assert_eq!(
            i.sha256(),
            "b9c80b5adeca450753a16950c3cc655d271f7bef7a485bc83f112b72fef21d37"
        );
        let n = Pytree::Int(9);
        let i = LeafInfo::of(&n);
        assert_eq!(
            (i.kind, i.dtype, i.shape.as_deref()),
            ("int", Some("int64"), Some(&[][..]))
        );
        assert_eq!(&*i.bytes, &9i64.to_le_bytes());
        let s = Pytree::Str("hé".into());
        let i = LeafInfo::of(&s);
        assert_eq!((i.dtype, i.shape.is_none(), i.nbytes()), (None, true, 3));
        assert_eq!(
            LeafInfo::of(&Pytree::None).sha256(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
