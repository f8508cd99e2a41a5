//! State dictionaries, load options, load reports and load errors.

use crate::dtype::DType;
use crate::tensor::Tensor;
use crate::variable::Variable;
use indexmap::IndexMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

/// The local state of one node: ordered `key -> value` (`{"Lif0.V": .., "Lif0.spike": ..}`).
#[derive(Clone, Default, PartialEq)]
pub struct StateDict(pub IndexMap<String, Tensor>);

/// The global state of a model: ordered `node name -> local state`, in traversal order.
#[derive(Clone, Default, PartialEq)]
pub struct StateTree(pub IndexMap<String, StateDict>);

macro_rules! map_newtype {
    ($name:ident, $v:ty) => {
        impl $name {
            /// An empty map.
            pub fn new() -> Self {
                Self(IndexMap::new())
            }
        }
        impl Deref for $name {
            type Target = IndexMap<String, $v>;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }
        impl DerefMut for $name {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.0
            }
        }
        impl<K: Into<String>> FromIterator<(K, $v)> for $name {
            fn from_iter<I: IntoIterator<Item = (K, $v)>>(iter: I) -> Self {
                Self(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
            }
        }
        impl IntoIterator for $name {
            type Item = (String, $v);
            type IntoIter = indexmap::map::IntoIter<String, $v>;
            fn into_iter(self) -> Self::IntoIter {
                self.0.into_iter()
            }
        }
        impl<'a> IntoIterator for &'a $name {
            type Item = (&'a String, &'a $v);
            type IntoIter = indexmap::map::Iter<'a, String, $v>;
            fn into_iter(self) -> Self::IntoIter {
                self.0.iter()
            }
        }
    };
}
map_newtype!(StateDict, Tensor);
map_newtype!(StateTree, StateDict);

impl fmt::Debug for StateDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, Summary(v))))
            .finish()
    }
}

impl fmt::Debug for StateTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

struct Summary<'a>(&'a Tensor);
impl fmt::Debug for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.summary())
    }
}

/// Prints `{'SNN0.var': f32[1]}` as BrainPy's summaries do.
impl fmt::Display for StateDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "'{k}': {}", v.summary())?;
        }
        f.write_str("}")
    }
}

/// Prints one node a line: `'Lif0': {'Lif0.V': f32[10], 'Lif0.spike': bool[10]}`.
impl fmt::Display for StateTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",\n ")?;
            }
            write!(f, "'{k}': {v}")?;
        }
        f.write_str("}")
    }
}

/// What a load left unmatched, as BrainPy's `StateLoadResult` (keys once-prefixed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateLoadResult {
    /// Keys the model has but the state lacked (an absent node by its bare name).
    pub missing_keys: Vec<String>,
    /// Keys the state carried that the model does not have.
    pub unexpected_keys: Vec<String>,
}

impl StateLoadResult {
    /// True when nothing was missing or unexpected.
    pub fn is_exact(&self) -> bool {
        self.missing_keys.is_empty() && self.unexpected_keys.is_empty()
    }
}

/// `StateLoadResult(missing_keys=['Dense0'], unexpected_keys=[])`, as BrainPy prints it.
impl fmt::Display for StateLoadResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(keys: &[String]) -> String {
            let quoted: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
            format!("[{}]", quoted.join(", "))
        }
        write!(
            f,
            "StateLoadResult(missing_keys={}, unexpected_keys={})",
            list(&self.missing_keys),
            list(&self.unexpected_keys)
        )
    }
}

/// How a load treats keys and batch sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Missing or unexpected keys are errors instead of being reported. Default false.
    pub strict: bool,
    /// A saved batch size different from the model's is adopted (BrainPy's behaviour). Default
    /// true; when false such a value is a [`LoadProblem::BatchSize`] error.
    pub adopt_batch: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            strict: false,
            adopt_batch: true,
        }
    }
}

impl LoadOptions {
    /// Strict loading: any missing or unexpected key is an error.
    pub fn strict() -> Self {
        LoadOptions {
            strict: true,
            ..Self::default()
        }
    }
}

/// One thing wrong with a state that is being loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadProblem {
    /// The value's dtype differs from the variable's.
    #[error("{key}: expected dtype {expected}, found {found}")]
    Dtype {
        /// Variable key.
        key: String,
        /// The variable's dtype.
        expected: DType,
        /// The saved value's dtype.
        found: DType,
    },
    /// The value's shape differs from the variable's (apart from the batch axis).
    #[error("{key}: expected shape {expected:?}, found {found:?} (batch axis {})", fmt_axis(*batch_axis))]
    Shape {
        /// Variable key.
        key: String,
        /// The variable's shape.
        expected: Vec<usize>,
        /// The saved value's shape.
        found: Vec<usize>,
        /// The variable's batch axis.
        batch_axis: Option<usize>,
    },
    /// The saved batch size differs and adopting it was not allowed.
    #[error("{key}: batch size {found} differs from the model's {expected} (allow it with LoadOptions::adopt_batch)")]
    BatchSize {
        /// Variable key.
        key: String,
        /// The model's batch size.
        expected: usize,
        /// The saved batch size.
        found: usize,
    },
    /// Strict load: the model has this key, the state does not.
    #[error("{key}: missing from the state")]
    Missing {
        /// Key (a bare node name for an absent node).
        key: String,
    },
    /// Strict load: the state has this key, the model does not.
    #[error("{key}: not in the model")]
    Unexpected {
        /// Key.
        key: String,
    },
    /// A hand-written loader rejected a value.
    #[error("{key}: {message}")]
    Invalid {
        /// Key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn fmt_axis(a: Option<usize>) -> String {
    a.map_or_else(|| "none".to_string(), |a| a.to_string())
}

impl LoadProblem {
    /// The key the problem is about.
    pub fn key(&self) -> &str {
        match self {
            LoadProblem::Dtype { key, .. }
            | LoadProblem::Shape { key, .. }
            | LoadProblem::BatchSize { key, .. }
            | LoadProblem::Missing { key }
            | LoadProblem::Unexpected { key }
            | LoadProblem::Invalid { key, .. } => key,
        }
    }

    /// The same problem with its key prefixed by `node.` unless it already is.
    pub fn prefixed(mut self, node: &str) -> LoadProblem {
        let key = match &mut self {
            LoadProblem::Dtype { key, .. }
            | LoadProblem::Shape { key, .. }
            | LoadProblem::BatchSize { key, .. }
            | LoadProblem::Missing { key }
            | LoadProblem::Unexpected { key }
            | LoadProblem::Invalid { key, .. } => key,
        };
        *key = prefix_key(node, key);
        self
    }
}

/// `Lif0.V` stays as is under node `Lif0`; a bare key `a` becomes `Lif0.a`.
pub fn prefix_key(node: &str, key: &str) -> String {
    match key.strip_prefix(node) {
        Some(rest) if rest.starts_with('.') => key.to_string(),
        _ => format!("{node}.{key}"),
    }
}

/// A load that was refused: every problem found, nothing assigned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// Every problem, in traversal order.
    pub problems: Vec<LoadProblem>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "state not loaded ({n} problem{}; nothing was changed):",
            if n == 1 { "" } else { "s" }
        )?;
        type Pick = fn(&LoadProblem) -> bool;
        let groups: [(&str, Pick); 4] = [
            ("dtype", |p| matches!(p, LoadProblem::Dtype { .. })),
            ("shape", |p| {
                matches!(p, LoadProblem::Shape { .. } | LoadProblem::BatchSize { .. })
            }),
            ("keys", |p| {
                matches!(p, LoadProblem::Missing { .. } | LoadProblem::Unexpected { .. })
            }),
            ("values", |p| matches!(p, LoadProblem::Invalid { .. })),
        ];
        for (label, pick) in groups {
            let items: Vec<&LoadProblem> = self.problems.iter().filter(|p| pick(p)).collect();
            if !items.is_empty() {
                writeln!(f, "  {label}:")?;
                for p in items {
                    writeln!(f, "    {p}")?;
                }
            }
        }
        if self
            .problems
            .iter()
            .any(|p| matches!(p, LoadProblem::Missing { .. } | LoadProblem::Unexpected { .. }))
        {
            write!(
                f,
                "hint: load without LoadOptions::strict to get these keys reported instead"
            )?;
        } else {
            write!(f, "hint: the state was saved from a differently configured model; rebuild the model with the saved sizes and dtypes")?;
        }
        Ok(())
    }
}

/// The outcome of checking one node's local state before anything is assigned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalCheck {
    /// Keys of the node absent from the state.
    pub missing: Vec<String>,
    /// Keys of the state the node does not have.
    pub unexpected: Vec<String>,
    /// Values that cannot be assigned.
    pub problems: Vec<LoadProblem>,
}

/// Builds a [`LocalCheck`] key by key; the tool for hand-written
/// [`CustomState::check_local`](crate::CustomState::check_local).
pub struct Checker<'a> {
    state: &'a StateDict,
    options: LoadOptions,
    seen: Vec<bool>,
    check: LocalCheck,
}

impl<'a> Checker<'a> {
    /// Starts checking `state`.
    pub fn new(state: &'a StateDict, options: &LoadOptions) -> Self {
        Checker {
            state,
            options: *options,
            seen: vec![false; state.len()],
            check: LocalCheck::default(),
        }
    }

    /// Marks `key` as expected and returns its value, or records it as missing.
    pub fn value(&mut self, key: &str) -> Option<&'a Tensor> {
        match self.state.get_full(key) {
            Some((i, _, v)) => {
                self.seen[i] = true;
                Some(v)
            }
            None => {
                self.check.missing.push(key.to_string());
                None
            }
        }
    }

    /// Expects `key` to hold a value assignable to `var`.
    pub fn variable(&mut self, key: &str, var: &Variable) -> &mut Self {
        if let Some(v) = self.value(key) {
            if let Err(p) = var.check(key, v, self.options.adopt_batch) {
                self.check.problems.push(p);
            }
        }
        self
    }

    /// Expects `key` to hold a tensor of `dtype` and `shape`.
    pub fn tensor(&mut self, key: &str, dtype: DType, shape: &[usize]) -> &mut Self {
        if let Some(v) = self.value(key) {
            if v.dtype() != dtype {
                self.check.problems.push(LoadProblem::Dtype {
                    key: key.into(),
                    expected: dtype,
                    found: v.dtype(),
                });
            } else if v.shape() != shape {
                self.check.problems.push(LoadProblem::Shape {
                    key: key.into(),
                    expected: shape.to_vec(),
                    found: v.shape().to_vec(),
                    batch_axis: None,
                });
            }
        }
        self
    }

    /// Records a problem found by the caller.
    pub fn problem(&mut self, problem: LoadProblem) -> &mut Self {
        self.check.problems.push(problem);
        self
    }

    /// Finishes: every key of the state not asked for is unexpected.
    pub fn finish(mut self) -> LocalCheck {
        for (k, seen) in self.state.keys().zip(self.seen) {
            if !seen {
                self.check.unexpected.push(k.clone());
            }
        }
        self.check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_result_prints_as_brainpy() {
        let r = StateLoadResult::default();
        assert_eq!(
            r.to_string(),
            "StateLoadResult(missing_keys=[], unexpected_keys=[])"
        );
        let r = StateLoadResult {
            missing_keys: vec!["SNN0.var".into(), "Dense0".into()],
            unexpected_keys: vec!["Lif0.bogus".into()],
        };
        assert_eq!(
            r.to_string(),
            "StateLoadResult(missing_keys=['SNN0.var', 'Dense0'], unexpected_keys=['Lif0.bogus'])"
        );
    }

    #[test]
    fn keys_are_prefixed_once() {
        assert_eq!(prefix_key("Lif0", "Lif0.V"), "Lif0.V");
        assert_eq!(prefix_key("Lif0", "a"), "Lif0.a");
        assert_eq!(prefix_key("Lif0", "Lif00.x"), "Lif0.Lif00.x");
    }

    #[test]
    fn load_error_lists_every_problem() {
        let e = LoadError {
            problems: vec![
                LoadProblem::Dtype {
                    key: "Lif0.spike".into(),
                    expected: DType::Bool,
                    found: DType::F32,
                },
                LoadProblem::Shape {
                    key: "Lif0.V".into(),
                    expected: vec![10],
                    found: vec![11],
                    batch_axis: None,
                },
            ],
        };
        let s = e.to_string();
        assert!(s.contains("2 problems"), "{s}");
        assert!(
            s.contains("Lif0.spike: expected dtype bool, found float32"),
            "{s}"
        );
        assert!(
            s.contains("Lif0.V: expected shape [10], found [11] (batch axis none)"),
            "{s}"
        );
    }
}
