//! Node names: `<TypeName><n>` unless given, reproducible per model.

use crate::node::{for_each_preorder, Stateful};
use std::collections::HashMap;
use std::sync::OnceLock;

/// A bad node name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a valid identifier (as Python's `str.isidentifier()`).
    #[error("invalid node name {name:?}: a name must be an identifier (a letter or `_`, then letters, digits or `_`)")]
    Invalid {
        /// The rejected name.
        name: String,
    },
    /// Two nodes of one model share a name.
    #[error("duplicate node name {name:?} in model {root:?}: names must be unique within a model")]
    Duplicate {
        /// The shared name.
        name: String,
        /// The name of the model's root node.
        root: String,
    },
}

/// True if `name` is an identifier in Python's sense (letters include non-ASCII letters).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => chars.all(|c| c.is_alphanumeric() || c == '_'),
        _ => false,
    }
}

/// A node's name: given by the user, or assigned as `<TypeName><n>` the first time the model
/// is named (see [`init_names`]).
///
/// Auto names are counted per type name within one model, in construction order (depth first,
/// fields in declaration order), so the same model built twice — in one process, in parallel
/// threads, or in another run — gets the same names, unlike BrainPy's process-wide counters.
#[derive(Clone, Debug, Default)]
pub struct NodeName {
    explicit: Option<String>,
    assigned: OnceLock<String>,
}

impl NodeName {
    /// A name to be assigned automatically.
    pub fn auto() -> NodeName {
        NodeName::default()
    }

    /// A user-given name; an error unless it is an identifier.
    pub fn new(name: impl Into<String>) -> Result<NodeName, NameError> {
        let name = name.into();
        if !is_identifier(&name) {
            return Err(NameError::Invalid { name });
        }
        Ok(NodeName {
            explicit: Some(name),
            assigned: OnceLock::new(),
        })
    }

    /// The name if it is known yet (given, or already assigned).
    pub fn get(&self) -> Option<&str> {
        self.explicit
            .as_deref()
            .or_else(|| self.assigned.get().map(String::as_str))
    }

    /// True when the user gave this name.
    pub fn is_explicit(&self) -> bool {
        self.explicit.is_some()
    }

    /// The name of `node`, whose name handle this is. If the node has none yet, names the whole
    /// subtree under `node` first, with `node` as the model's root.
    pub fn resolve<'a>(&'a self, node: &dyn Stateful) -> &'a str {
        if let Some(n) = self.get() {
            return n;
        }
        assign_names(node);
        self.get().unwrap_or("")
    }

    fn assign(&self, name: String) {
        // Another thread may have won the race; both computed the same name.
        let _ = self.assigned.set(name);
    }
}

/// Assigns `<TypeName><n>` to every unnamed node under `root` (pre-order, per-type counters
/// local to this model; given names do not advance the counters, as in BrainPy).
fn assign_names(root: &dyn Stateful) {
    let mut counters: HashMap<&'static str, usize> = HashMap::new();
    for_each_preorder(root, &mut |node| {
        let handle = node.node_name();
        if handle.is_explicit() {
            return;
        }
        let n = counters.entry(node.type_name()).or_insert(0);
        let name = format!("{}{}", node.type_name(), *n);
        *n += 1;
        handle.assign(name);
    });
}

/// Names every node of the model (if not named yet) and checks that the names are unique.
pub fn init_names(root: &dyn Stateful) -> Result<(), NameError> {
    assign_names(root);
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut dup = None;
    for_each_preorder(root, &mut |node| {
        let name = node.name().to_string();
        if seen.insert(name.clone(), ()).is_some() && dup.is_none() {
            dup = Some(name);
        }
    });
    match dup {
        Some(name) => Err(NameError::Duplicate {
            name,
            root: root.name().to_string(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["SNN0", "_x", "r", "Lif_1", "ñame"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "my-lif", "0abc", "a.b", "a b"] {
            assert!(!is_identifier(bad), "{bad}");
            assert_eq!(
                NodeName::new(bad).unwrap_err(),
                NameError::Invalid { name: bad.into() }
            );
        }
        assert_eq!(NodeName::new("r").unwrap().get(), Some("r"));
        assert_eq!(NodeName::auto().get(), None);
    }
}
