//! The [`Stateful`] trait and BrainPy's global `save_state` / `load_state`.

use crate::naming::{init_names, NameError, NodeName};
use crate::state::{
    prefix_key, Checker, LoadError, LoadOptions, LoadProblem, LocalCheck, StateDict, StateLoadResult,
    StateTree,
};
use crate::variable::Variable;
use indexmap::IndexMap;

/// A node of a model: it has a name, variables, and child nodes.
///
/// Usually derived with `#[derive(Stateful)]`. The local state methods (`save_state`,
/// `check_state`, `apply_state`) have defaults that save every variable under
/// `<name>.<field>`; a node with hand-written local state implements [`CustomState`] and derives
/// with `#[stateful(custom)]`.
pub trait Stateful {
    /// The type's name used for auto names (`Dense`, `Lif`, `SNN`).
    fn type_name(&self) -> &'static str;

    /// The node's name handle.
    fn node_name(&self) -> &NodeName;

    /// The node's name: the given one or `<TypeName><n>`.
    fn name(&self) -> &str;

    /// Visits the node's own variables with their local field keys (`V`, `vl-0`).
    fn visit_variables<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Variable));

    /// Visits the node's direct children in field order.
    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&'a dyn Stateful));

    /// Visits the node's own variables and its direct children mutably, in one borrow.
    fn visit_mut<'a>(
        &'a mut self,
        vars: &mut dyn FnMut(&str, &'a mut Variable),
        children: &mut dyn FnMut(&'a mut dyn Stateful),
    );

    /// The local state: `{"<name>.<field>": value}` (BrainPy's `node.save_state()`).
    fn save_state(&self) -> StateDict {
        let name = self.name();
        let mut out = StateDict::new();
        self.visit_variables(&mut |key, var| {
            out.insert(local_key(name, key), var.value().clone());
        });
        out
    }

    /// Checks a local state against the node without changing anything.
    fn check_state(&self, state: &StateDict, options: &LoadOptions) -> LocalCheck {
        let name = self.name();
        let mut checker = Checker::new(state, options);
        let mut buf = String::new();
        self.visit_variables(&mut |key, var| {
            checker.variable(fill_key(&mut buf, name, key), var);
        });
        checker.finish()
    }

    /// Assigns a local state that [`Stateful::check_state`] accepted.
    fn apply_state(&mut self, state: &StateDict, options: &LoadOptions) {
        let _ = options;
        let name = self.name().to_string();
        let mut buf = String::new();
        self.visit_mut(
            &mut |key, var| {
                if let Some(v) = state.get(fill_key(&mut buf, &name, key)) {
                    var.reset(v.clone());
                }
            },
            &mut |_| {},
        );
    }

    /// Loads the local state (BrainPy's `node.load_state(dict)`): checks everything, then
    /// assigns; on any problem nothing changes.
    fn load_state(&mut self, state: &StateDict) -> Result<StateLoadResult, LoadError> {
        load_local(self, state, &LoadOptions::default())
    }
}

/// `<node>.<field>`, the key of a variable in its node's local state.
pub fn local_key(node: &str, field: &str) -> String {
    let mut s = String::with_capacity(node.len() + 1 + field.len());
    s.push_str(node);
    s.push('.');
    s.push_str(field);
    s
}

fn fill_key<'b>(buf: &'b mut String, node: &str, field: &str) -> &'b str {
    buf.clear();
    buf.push_str(node);
    buf.push('.');
    buf.push_str(field);
    buf
}

#[diagnostic::on_unimplemented(
    message = "`#[stateful(custom)]` needs `impl CustomState for {Self}`",
    label = "hand-written local state is missing",
    note = "implement `save_local`, `check_local` and `apply_local`, or drop `custom` to save every variable"
)]
/// Hand-written local state for a node derived with `#[stateful(custom)]` (BrainPy's override of
/// `save_state` / `load_state`). The derive still provides naming and the traversal of children.
pub trait CustomState {
    /// The local state (BrainPy's overridden `save_state`).
    fn save_local(&self) -> StateDict;
    /// Checks a local state without changing anything (use [`Checker`]).
    fn check_local(&self, state: &StateDict, options: &LoadOptions) -> LocalCheck;
    /// Assigns a local state that `check_local` accepted (BrainPy's overridden `load_state`).
    fn apply_local(&mut self, state: &StateDict, options: &LoadOptions);
}

/// Local load with options: check, then assign only if there is no problem.
pub fn load_local<S: Stateful + ?Sized>(
    node: &mut S,
    state: &StateDict,
    options: &LoadOptions,
) -> Result<StateLoadResult, LoadError> {
    let check = node.check_state(state, options);
    let mut problems = check.problems;
    if options.strict {
        problems.extend(
            check
                .missing
                .iter()
                .map(|k| LoadProblem::Missing { key: k.clone() }),
        );
        problems.extend(
            check
                .unexpected
                .iter()
                .map(|k| LoadProblem::Unexpected { key: k.clone() }),
        );
    }
    if !problems.is_empty() {
        return Err(LoadError { problems });
    }
    node.apply_state(state, options);
    Ok(StateLoadResult {
        missing_keys: check.missing,
        unexpected_keys: check.unexpected,
    })
}

impl<T: Stateful + ?Sized> Stateful for Box<T> {
    fn type_name(&self) -> &'static str {
        (**self).type_name()
    }
    fn node_name(&self) -> &NodeName {
        (**self).node_name()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn visit_variables<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Variable)) {
        (**self).visit_variables(f)
    }
    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&'a dyn Stateful)) {
        (**self).visit_children(f)
    }
    fn visit_mut<'a>(
        &'a mut self,
        vars: &mut dyn FnMut(&str, &'a mut Variable),
        children: &mut dyn FnMut(&'a mut dyn Stateful),
    ) {
        (**self).visit_mut(vars, children)
    }
    fn save_state(&self) -> StateDict {
        (**self).save_state()
    }
    fn check_state(&self, state: &StateDict, options: &LoadOptions) -> LocalCheck {
        (**self).check_state(state, options)
    }
    fn apply_state(&mut self, state: &StateDict, options: &LoadOptions) {
        (**self).apply_state(state, options)
    }
}

/// Visits `root` and every node below it depth first, parents before children, fields in order
/// (construction order).
pub fn for_each_preorder<'a>(root: &'a dyn Stateful, f: &mut dyn FnMut(&'a dyn Stateful)) {
    f(root);
    root.visit_children(&mut |c| for_each_preorder(c, f));
}

/// Every node of the model in BrainPy's traversal order: the node, its direct children, then
/// each child's subtree in the same way.
pub fn nodes(root: &dyn Stateful) -> Vec<&dyn Stateful> {
    let mut out = vec![root];
    push_subtree(root, &mut out);
    out
}

fn push_subtree<'a>(node: &'a dyn Stateful, out: &mut Vec<&'a dyn Stateful>) {
    let mut kids = Vec::new();
    node.visit_children(&mut |c| kids.push(c));
    out.extend(kids.iter().copied());
    for k in kids {
        push_subtree(k, out);
    }
}

/// Visits every node mutably (parents before children).
pub fn for_each_node_mut(root: &mut dyn Stateful, f: &mut dyn FnMut(&mut dyn Stateful)) {
    f(&mut *root);
    root.visit_mut(&mut |_, _| {}, &mut |c| for_each_node_mut(c, f));
}

/// Every variable of the model with its global key (`Lif0.V`), in traversal order.
pub fn variables(root: &dyn Stateful) -> Result<Vec<(String, &Variable)>, NameError> {
    init_names(root)?;
    let mut out = Vec::new();
    for node in nodes(root) {
        let name = node.name();
        node.visit_variables(&mut |k, v| out.push((local_key(name, k), v)));
    }
    Ok(out)
}

/// Every variable of the model, mutably, with its global key (parents before children).
pub fn variables_mut(root: &mut dyn Stateful) -> Result<Vec<(String, &mut Variable)>, NameError> {
    init_names(root)?;
    let mut out = Vec::new();
    collect_vars_mut(root, &mut out);
    Ok(out)
}

fn collect_vars_mut<'a>(node: &'a mut dyn Stateful, out: &mut Vec<(String, &'a mut Variable)>) {
    let name = node.name().to_string();
    let mut kids: Vec<&'a mut dyn Stateful> = Vec::new();
    node.visit_mut(&mut |k, v| out.push((format!("{name}.{k}"), v)), &mut |c| {
        kids.push(c)
    });
    for k in kids {
        collect_vars_mut(k, out);
    }
}

/// BrainPy's `bp.save_state(net)`: `{node name: local state}` for every node, in traversal order.
pub fn save_state(root: &dyn Stateful) -> Result<StateTree, NameError> {
    init_names(root)?;
    Ok(nodes(root)
        .into_iter()
        .map(|n| (n.name().to_string(), n.save_state()))
        .collect())
}

/// Why a global load failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The model's names are invalid or not unique.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The state does not fit the model; nothing was changed.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// BrainPy's `bp.load_state(net, state)` with default options.
pub fn load_state(root: &mut dyn Stateful, state: &StateTree) -> Result<StateLoadResult, StateError> {
    load_state_with(root, state, &LoadOptions::default())
}

/// Loads a global state: validates every node first, then assigns; on any problem nothing
/// changes and the error lists every problem.
///
/// Reports keys once-prefixed; an absent node by its bare name; top-level entries that match
/// no node are unexpected when they carry state (an empty one, like BrainPy's stateless
/// `ExponentialEuler0`, is ignored).
pub fn load_state_with(
    root: &mut dyn Stateful,
    state: &StateTree,
    options: &LoadOptions,
) -> Result<StateLoadResult, StateError> {
    init_names(root)?;
    let mut result = StateLoadResult::default();
    let mut problems = Vec::new();
    let all = nodes(root);
    for node in &all {
        let name = node.name();
        match state.get(name) {
            None => result.missing_keys.push(name.to_string()),
            Some(local) => {
                let check = node.check_state(local, options);
                result
                    .missing_keys
                    .extend(check.missing.iter().map(|k| prefix_key(name, k)));
                result
                    .unexpected_keys
                    .extend(check.unexpected.iter().map(|k| prefix_key(name, k)));
                problems.extend(check.problems.into_iter().map(|p| p.prefixed(name)));
            }
        }
    }
    for (name, local) in state.iter() {
        if !all.iter().any(|n| n.name() == name) {
            result
                .unexpected_keys
                .extend(local.keys().map(|k| prefix_key(name, k)));
        }
    }
    drop(all);
    if options.strict {
        problems.extend(
            result
                .missing_keys
                .iter()
                .map(|k| LoadProblem::Missing { key: k.clone() }),
        );
        problems.extend(
            result
                .unexpected_keys
                .iter()
                .map(|k| LoadProblem::Unexpected { key: k.clone() }),
        );
    }
    if !problems.is_empty() {
        return Err(LoadError { problems }.into());
    }
    for_each_node_mut(root, &mut |node| {
        if let Some(local) = state.get(node.name()) {
            node.apply_state(local, options);
        }
    });
    Ok(result)
}

/// Method-style spellings of the global functions (BrainPy's `state_dict` / `load_state_dict`).
pub trait StatefulExt: Stateful {
    /// The global state of this node and its subtree ([`save_state`]).
    fn state_dict(&self) -> Result<StateTree, NameError>
    where
        Self: Sized,
    {
        save_state(self)
    }

    /// Loads a global state into this node and its subtree ([`load_state`]).
    fn load_state_dict(&mut self, state: &StateTree) -> Result<StateLoadResult, StateError>
    where
        Self: Sized,
    {
        load_state(self, state)
    }

    /// [`StatefulExt::load_state_dict`] with options.
    fn load_state_dict_with(
        &mut self,
        state: &StateTree,
        options: &LoadOptions,
    ) -> Result<StateLoadResult, StateError>
    where
        Self: Sized,
    {
        load_state_with(self, state, options)
    }
}

impl<T: Stateful + ?Sized> StatefulExt for T {}

/// A field of a derived node: a variable, a child node, or a container of either. The derive
/// dispatches on this trait; fields whose type does not implement it are plain data, not saved.
pub trait StateField {
    /// Visits the variables this field holds, keyed from `key` (`v`, `v-0`, `v-name`).
    fn visit_field_variables<'a>(&'a self, key: &str, f: &mut dyn FnMut(&str, &'a Variable)) {
        let _ = (key, f);
    }
    /// Visits the child nodes this field holds.
    fn visit_field_children<'a>(&'a self, f: &mut dyn FnMut(&'a dyn Stateful)) {
        let _ = f;
    }
    /// Visits variables and child nodes mutably.
    fn visit_field_mut<'a>(
        &'a mut self,
        key: &str,
        vars: &mut dyn FnMut(&str, &'a mut Variable),
        children: &mut dyn FnMut(&'a mut dyn Stateful),
    ) {
        let _ = (key, vars, children);
    }
}

impl StateField for Variable {
    fn visit_field_variables<'a>(&'a self, key: &str, f: &mut dyn FnMut(&str, &'a Variable)) {
        f(key, self)
    }
    fn visit_field_mut<'a>(
        &'a mut self,
        key: &str,
        vars: &mut dyn FnMut(&str, &'a mut Variable),
        _children: &mut dyn FnMut(&'a mut dyn Stateful),
    ) {
        vars(key, self)
    }
}

impl<T: Stateful> StateField for T {
    fn visit_field_children<'a>(&'a self, f: &mut dyn FnMut(&'a dyn Stateful)) {
        f(self)
    }
    fn visit_field_mut<'a>(
        &'a mut self,
        _key: &str,
        _vars: &mut dyn FnMut(&str, &'a mut Variable),
        children: &mut dyn FnMut(&'a mut dyn Stateful),
    ) {
        children(self)
    }
}

macro_rules! sequence_field {
    ($($ty:ty => [$($gen:tt)*]),*) => {$(
        impl<$($gen)*> StateField for $ty {
            fn visit_field_variables<'a>(&'a self, key: &str, f: &mut dyn FnMut(&str, &'a Variable)) {
                for (i, x) in self.iter().enumerate() {
                    x.visit_field_variables(&format!("{key}-{i}"), f);
                }
            }
            fn visit_field_children<'a>(&'a self, f: &mut dyn FnMut(&'a dyn Stateful)) {
                for x in self.iter() {
                    x.visit_field_children(f);
                }
            }
            fn visit_field_mut<'a>(
                &'a mut self,
                key: &str,
                vars: &mut dyn FnMut(&str, &'a mut Variable),
                children: &mut dyn FnMut(&'a mut dyn Stateful),
            ) {
                for (i, x) in self.iter_mut().enumerate() {
                    x.visit_field_mut(&format!("{key}-{i}"), vars, children);
                }
            }
        }
    )*};
}
sequence_field!(Vec<T> => [T: StateField], [T; N] => [T: StateField, const N: usize]);

impl<T: StateField> StateField for Option<T> {
    fn visit_field_variables<'a>(&'a self, key: &str, f: &mut dyn FnMut(&str, &'a Variable)) {
        if let Some(x) = self {
            x.visit_field_variables(key, f)
        }
    }
    fn visit_field_children<'a>(&'a self, f: &mut dyn FnMut(&'a dyn Stateful)) {
        if let Some(x) = self {
            x.visit_field_children(f)
        }
    }
    fn visit_field_mut<'a>(
        &'a mut self,
        key: &str,
        vars: &mut dyn FnMut(&str, &'a mut Variable),
        children: &mut dyn FnMut(&'a mut dyn Stateful),
    ) {
        if let Some(x) = self {
            x.visit_field_mut(key, vars, children)
        }
    }
}

/// BrainPy's `VarDict` / `NodeDict`: variables keyed `<field>-<key>`, children in insertion order.
impl<T: StateField> StateField for IndexMap<String, T> {
    fn visit_field_variables<'a>(&'a self, key: &str, f: &mut dyn FnMut(&str, &'a Variable)) {
        for (k, x) in self {
            x.visit_field_variables(&format!("{key}-{k}"), f);
        }
    }
    fn visit_field_children<'a>(&'a self, f: &mut dyn FnMut(&'a dyn Stateful)) {
        for x in self.values() {
            x.visit_field_children(f);
        }
    }
    fn visit_field_mut<'a>(
        &'a mut self,
        key: &str,
        vars: &mut dyn FnMut(&str, &'a mut Variable),
        children: &mut dyn FnMut(&'a mut dyn Stateful),
    ) {
        for (k, x) in self.iter_mut() {
            x.visit_field_mut(&format!("{key}-{k}"), vars, children);
        }
    }
}

impl<T: ?Sized> StateField for std::marker::PhantomData<T> {}
