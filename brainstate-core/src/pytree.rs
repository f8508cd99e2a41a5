//! [`Pytree`]: the tree a checkpoint file holds.

use crate::dtype::C128;
use crate::state::{StateDict, StateTree};
use crate::tensor::{Storable, Tensor};
use indexmap::IndexMap;
use std::fmt;

/// The map of a [`Pytree::Map`]: string keys in insertion order, hashed with foldhash (much
/// faster than the default SipHash on the short keys of a checkpoint, and randomly seeded per
/// process, so hostile files cannot count on colliding keys). Build one with
/// `PytreeMap::default()` or `PytreeMap::with_capacity_and_hasher(n, Default::default())`.
pub type PytreeMap = IndexMap<String, Pytree, foldhash::fast::RandomState>;

/// A checkpoint tree: ordered string-keyed maps, lists, and leaves.
///
/// Leaves keep what BrainPy's files distinguish, so that a file read and written back is the
/// same: an ndarray ([`Pytree::Tensor`], also 0-d) is not a numpy scalar ([`Pytree::Scalar`]),
/// and a Python `int`/`float`/`complex` is neither.
#[derive(Clone, Debug, PartialEq)]
pub enum Pytree {
    /// An ordered map with string keys (a Python dict).
    Map(PytreeMap),
    /// A list (written by BrainPy's format as a map keyed `"0"`, `"1"`, ...).
    List(Vec<Pytree>),
    /// An n-d array (numpy ndarray; 0-d allowed).
    Tensor(Tensor),
    /// A numpy scalar such as `np.float32(1.5)`: a 0-d tensor marked as a scalar.
    Scalar(Tensor),
    /// A Python int that fits `i64`.
    Int(i64),
    /// A Python int above `i64::MAX` (up to `u64::MAX`).
    UInt(u64),
    /// A Python float.
    Float(f64),
    /// A Python complex.
    Complex(C128),
    /// A bool.
    Bool(bool),
    /// A string.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// None.
    None,
}

/// A pytree value had another type, or a key was absent, at `path`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PytreeError {
    /// The value at `path` is not of the expected kind.
    #[error("at {path}: expected {expected}, found {found}")]
    WrongType {
        /// Slash-joined path from the root (`/` for the root).
        path: String,
        /// What was expected.
        expected: &'static str,
        /// What was there.
        found: &'static str,
    },
    /// The map at `path` has no key `key`.
    #[error("at {path}: no key {key:?} (keys: {available})")]
    MissingKey {
        /// Path of the map.
        path: String,
        /// The key asked for.
        key: String,
        /// The keys the map has, comma-separated.
        available: String,
    },
    /// An integer does not fit the asked type.
    #[error("at {path}: integer {value} does not fit {target}")]
    OutOfRange {
        /// Path.
        path: String,
        /// The value.
        value: String,
        /// The asked type.
        target: &'static str,
    },
}

impl Pytree {
    /// An empty map.
    pub fn map() -> Pytree {
        Pytree::Map(PytreeMap::default())
    }

    /// The kind's name used in errors: `map`, `list`, `tensor`, `scalar`, `int`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Pytree::Map(_) => "map",
            Pytree::List(_) => "list",
            Pytree::Tensor(_) => "tensor",
            Pytree::Scalar(_) => "numpy scalar",
            Pytree::Int(_) | Pytree::UInt(_) => "int",
            Pytree::Float(_) => "float",
            Pytree::Complex(_) => "complex",
            Pytree::Bool(_) => "bool",
            Pytree::Str(_) => "str",
            Pytree::Bytes(_) => "bytes",
            Pytree::None => "none",
        }
    }

    /// Inserts into a map (builder style). Does nothing on a non-map.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Pytree>) -> Pytree {
        if let Pytree::Map(m) = &mut self {
            m.insert(key.into(), value.into());
        }
        self
    }

    /// A cursor at the root, for typed access with path-aware errors.
    pub fn root(&self) -> Node<'_> {
        Node {
            value: self,
            path: String::new(),
        }
    }

    /// The value under `key` of the root map.
    pub fn get(&self, key: &str) -> Result<Node<'_>, PytreeError> {
        self.root().get(key)
    }

    /// The value at a slash-separated path (`"net/Lif0/Lif0.V"`); keys of list items are indices.
    pub fn at(&self, path: &str) -> Result<Node<'_>, PytreeError> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .try_fold(self.root(), |n, k| n.get(k))
    }

    /// Visits every leaf with its path (list indices as strings), depth first, in order.
    pub fn visit_leaves<'a>(&'a self, f: &mut dyn FnMut(&[String], &'a Pytree)) {
        fn walk<'a>(t: &'a Pytree, path: &mut Vec<String>, f: &mut dyn FnMut(&[String], &'a Pytree)) {
            match t {
                Pytree::Map(m) => {
                    for (k, v) in m {
                        path.push(k.clone());
                        walk(v, path, f);
                        path.pop();
                    }
                }
                Pytree::List(l) => {
                    for (i, v) in l.iter().enumerate() {
                        path.push(i.to_string());
                        walk(v, path, f);
                        path.pop();
                    }
                }
                leaf => f(path, leaf),
            }
        }
        walk(self, &mut Vec::new(), f)
    }

    /// The tree as a [`StateTree`] (`{node: {key: tensor}}`), failing with the path otherwise.
    pub fn to_state_tree(&self) -> Result<StateTree, PytreeError> {
        self.root().state_tree()
    }
}

/// A position in a pytree: the value and its path, for accessors whose errors name the path.
#[derive(Clone, Debug)]
pub struct Node<'a> {
    value: &'a Pytree,
    path: String,
}

impl<'a> Node<'a> {
    /// The value here.
    pub fn value(&self) -> &'a Pytree {
        self.value
    }

    /// The slash-joined path from the root (`/` at the root).
    pub fn path(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            &self.path
        }
    }

    fn wrong(&self, expected: &'static str) -> PytreeError {
        PytreeError::WrongType {
            path: self.path().to_string(),
            expected,
            found: self.value.kind(),
        }
    }

    fn child(&self, key: &str, value: &'a Pytree) -> Node<'a> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.path)
        };
        Node { value, path }
    }

    /// The entry `key` of a map (or index `key` of a list).
    pub fn get(&self, key: &str) -> Result<Node<'a>, PytreeError> {
        match self.value {
            Pytree::Map(m) => m
                .get(key)
                .map(|v| self.child(key, v))
                .ok_or_else(|| PytreeError::MissingKey {
                    path: self.path().to_string(),
                    key: key.to_string(),
                    available: m.keys().cloned().collect::<Vec<_>>().join(", "),
                }),
            Pytree::List(l) => key
                .parse::<usize>()
                .ok()
                .and_then(|i| l.get(i))
                .map(|v| self.child(key, v))
                .ok_or_else(|| PytreeError::MissingKey {
                    path: self.path().to_string(),
                    key: key.to_string(),
                    available: format!("0..{}", l.len()),
                }),
            _ => Err(self.wrong("map")),
        }
    }

    /// A map's entries.
    pub fn map(&self) -> Result<&'a PytreeMap, PytreeError> {
        match self.value {
            Pytree::Map(m) => Ok(m),
            _ => Err(self.wrong("map")),
        }
    }

    /// An integer (a Python int, or an integer tensor/scalar with one element).
    pub fn i64(&self) -> Result<i64, PytreeError> {
        let range = |v: String| PytreeError::OutOfRange {
            path: self.path().to_string(),
            value: v,
            target: "i64",
        };
        match self.value {
            Pytree::Int(i) => Ok(*i),
            Pytree::UInt(u) => i64::try_from(*u).map_err(|_| range(u.to_string())),
            Pytree::Tensor(t) | Pytree::Scalar(t) if t.len() == 1 => {
                let b = t.le_bytes();
                match t.dtype() {
                    crate::DType::I64 => Ok(i64::from_le_bytes(b[..8].try_into().expect("8 bytes"))),
                    crate::DType::I32 => Ok(i32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as i64),
                    crate::DType::U32 => Ok(u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as i64),
                    _ => Err(self.wrong("int")),
                }
            }
            _ => Err(self.wrong("int")),
        }
    }

    /// An unsigned size (a non-negative int).
    pub fn usize(&self) -> Result<usize, PytreeError> {
        let i = self.i64()?;
        usize::try_from(i).map_err(|_| PytreeError::OutOfRange {
            path: self.path().to_string(),
            value: i.to_string(),
            target: "usize",
        })
    }

    /// A float (a Python float, or a one-element f32/f64 tensor or scalar, as a JAX loss).
    pub fn f64(&self) -> Result<f64, PytreeError> {
        match self.value {
            Pytree::Float(x) => Ok(*x),
            Pytree::Tensor(t) | Pytree::Scalar(t) if t.len() == 1 => match t.dtype() {
                crate::DType::F32 => Ok(t.as_slice::<f32>().expect("f32")[0] as f64),
                crate::DType::F64 => Ok(t.as_slice::<f64>().expect("f64")[0]),
                _ => Err(self.wrong("float")),
            },
            _ => Err(self.wrong("float")),
        }
    }

    /// A bool.
    pub fn bool(&self) -> Result<bool, PytreeError> {
        match self.value {
            Pytree::Bool(b) => Ok(*b),
            _ => Err(self.wrong("bool")),
        }
    }

    /// A string.
    pub fn str(&self) -> Result<&'a str, PytreeError> {
        match self.value {
            Pytree::Str(s) => Ok(s),
            _ => Err(self.wrong("str")),
        }
    }

    /// An array (a tensor or a numpy scalar).
    pub fn tensor(&self) -> Result<&'a Tensor, PytreeError> {
        match self.value {
            Pytree::Tensor(t) | Pytree::Scalar(t) => Ok(t),
            _ => Err(self.wrong("tensor")),
        }
    }

    /// A map of tensors as a [`StateDict`].
    pub fn state_dict(&self) -> Result<StateDict, PytreeError> {
        let m = self.map()?;
        m.iter()
            .map(|(k, v)| Ok((k.clone(), self.child(k, v).tensor()?.clone())))
            .collect()
    }

    /// A map of maps of tensors as a [`StateTree`].
    pub fn state_tree(&self) -> Result<StateTree, PytreeError> {
        let m = self.map()?;
        m.iter()
            .map(|(k, v)| Ok((k.clone(), self.child(k, v).state_dict()?)))
            .collect()
    }
}

impl From<StateDict> for Pytree {
    fn from(d: StateDict) -> Pytree {
        Pytree::Map(d.0.into_iter().map(|(k, v)| (k, Pytree::Tensor(v))).collect())
    }
}

impl From<StateTree> for Pytree {
    fn from(t: StateTree) -> Pytree {
        Pytree::Map(t.0.into_iter().map(|(k, v)| (k, Pytree::from(v))).collect())
    }
}

impl From<Tensor> for Pytree {
    fn from(t: Tensor) -> Pytree {
        Pytree::Tensor(t)
    }
}

impl<T: Storable, D: ndarray::Dimension> From<ndarray::Array<T, D>> for Pytree {
    fn from(a: ndarray::Array<T, D>) -> Pytree {
        Pytree::Tensor(Tensor::from(a))
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Pytree {
            fn from(v: $t) -> Pytree { Pytree::Int(v as i64) }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for Pytree {
    fn from(v: u64) -> Pytree {
        i64::try_from(v).map_or(Pytree::UInt(v), Pytree::Int)
    }
}

impl From<usize> for Pytree {
    fn from(v: usize) -> Pytree {
        Pytree::from(v as u64)
    }
}

/// A Python float.
impl From<f64> for Pytree {
    fn from(v: f64) -> Pytree {
        Pytree::Float(v)
    }
}

/// An `f32` becomes a 0-d float32 array, as a JAX scalar (the tutorial's `train_loss`) does.
impl From<f32> for Pytree {
    fn from(v: f32) -> Pytree {
        Pytree::Tensor(Tensor::scalar(v))
    }
}

impl From<bool> for Pytree {
    fn from(v: bool) -> Pytree {
        Pytree::Bool(v)
    }
}

impl From<&str> for Pytree {
    fn from(v: &str) -> Pytree {
        Pytree::Str(v.to_string())
    }
}

impl From<String> for Pytree {
    fn from(v: String) -> Pytree {
        Pytree::Str(v)
    }
}

impl From<C128> for Pytree {
    fn from(v: C128) -> Pytree {
        Pytree::Complex(v)
    }
}

impl From<Vec<u8>> for Pytree {
    fn from(v: Vec<u8>) -> Pytree {
        Pytree::Bytes(v)
    }
}

impl<T: Into<Pytree>> From<Option<T>> for Pytree {
    fn from(v: Option<T>) -> Pytree {
        v.map_or(Pytree::None, Into::into)
    }
}

impl From<Vec<Pytree>> for Pytree {
    fn from(v: Vec<Pytree>) -> Pytree {
        Pytree::List(v)
    }
}

impl<K: Into<String>, V: Into<Pytree>> FromIterator<(K, V)> for Pytree {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Pytree {
        Pytree::Map(iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

/// Builds a map-shaped [`Pytree`]: `pytree! { "net" => save_state(&net)?, "epoch_i" => i }`.
#[macro_export]
macro_rules! pytree {
    ($($key:expr => $value:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut map = $crate::PytreeMap::default();
        $( map.insert(::std::string::String::from($key), $crate::Pytree::from($value)); )*
        $crate::Pytree::Map(map)
    }};
}

/// An indented outline: one line a leaf with its kind, dtype and shape.
impl fmt::Display for Pytree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn go(t: &Pytree, depth: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let pad = "  ".repeat(depth);
            match t {
                Pytree::Map(m) => {
                    for (k, v) in m {
                        match v {
                            Pytree::Map(_) | Pytree::List(_) => {
                                writeln!(f, "{pad}{k}:")?;
                                go(v, depth + 1, f)?;
                            }
                            leaf => writeln!(f, "{pad}{k}: {}", leaf_text(leaf))?,
                        }
                    }
                    Ok(())
                }
                Pytree::List(l) => {
                    for (i, v) in l.iter().enumerate() {
                        match v {
                            Pytree::Map(_) | Pytree::List(_) => {
                                writeln!(f, "{pad}[{i}]:")?;
                                go(v, depth + 1, f)?;
                            }
                            leaf => writeln!(f, "{pad}[{i}]: {}", leaf_text(leaf))?,
                        }
                    }
                    Ok(())
                }
                leaf => writeln!(f, "{pad}{}", leaf_text(leaf)),
            }
        }
        go(self, 0, f)
    }
}

fn leaf_text(t: &Pytree) -> String {
    match t {
        Pytree::Tensor(x) => x.summary(),
        Pytree::Scalar(x) => format!("{} scalar {}", x.dtype(), x.format_values(1)),
        Pytree::Int(i) => format!("int {i}"),
        Pytree::UInt(u) => format!("int {u}"),
        Pytree::Float(x) => format!("float {x}"),
        Pytree::Complex(c) => format!("complex {}{:+}j", c.re, c.im),
        Pytree::Bool(b) => format!("bool {b}"),
        Pytree::Str(s) => format!("str {s:?}"),
        Pytree::Bytes(b) => format!("bytes[{}]", b.len()),
        Pytree::None => "none".into(),
        Pytree::Map(_) | Pytree::List(_) => unreachable!("containers are not leaves"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn sample() -> Pytree {
        let mut tree = StateTree::new();
        let mut lif = StateDict::new();
        lif.insert("Lif0.V".into(), Tensor::from(array![0.0f32, 1.0]));
        tree.insert("SNN0".into(), StateDict::new());
        tree.insert("Lif0".into(), lif);
        crate::pytree! { "net" => tree, "epoch_i" => 3, "train_loss" => 0.5f32 }
    }

    #[test]
    fn typed_accessors() {
        let t = sample();
        assert_eq!(t.get("epoch_i").unwrap().i64().unwrap(), 3);
        assert_eq!(t.get("train_loss").unwrap().f64().unwrap(), 0.5);
        let st = t.get("net").unwrap().state_tree().unwrap();
        assert_eq!(st.keys().collect::<Vec<_>>(), ["SNN0", "Lif0"]);
        assert_eq!(t.at("net/Lif0/Lif0.V").unwrap().tensor().unwrap().shape(), &[2]);
    }

    #[test]
    fn errors_name_the_path() {
        let t = sample();
        let e = t.at("net/Lif0/Lif0.V").unwrap().i64().unwrap_err();
        assert_eq!(
            e,
            PytreeError::WrongType {
                path: "net/Lif0/Lif0.V".into(),
                expected: "int",
                found: "tensor"
            }
        );
        let e = t.at("net/Lif1").unwrap_err();
        assert!(
            e.to_string()
                .contains("at net: no key \"Lif1\" (keys: SNN0, Lif0)"),
            "{e}"
        );
        let e = t.get("epoch_i").unwrap().state_tree().unwrap_err();
        assert_eq!(e.to_string(), "at epoch_i: expected map, found int");
        let e = sample()
            .with("net", pytree! {"SNN0" => 1})
            .get("net")
            .unwrap()
            .state_tree()
            .unwrap_err();
        assert_eq!(e.to_string(), "at net/SNN0: expected map, found int");
    }

    #[test]
    fn leaves_are_visited_in_order() {
        let mut paths = Vec::new();
        sample().visit_leaves(&mut |p, _| paths.push(p.join("/")));
        assert_eq!(paths, ["net/Lif0/Lif0.V", "epoch_i", "train_loss"]);
    }
}
