//! Validation of the parsed model, with spanned errors collected together.

use crate::ast::Container;
use crate::attr::Errors;
use std::collections::HashMap;
use syn::spanned::Spanned;

pub fn check(c: &Container, errors: &mut Errors) {
    if let Some(t) = &c.attrs.type_name {
        let v = t.value();
        if !is_identifier(&v) {
            errors.push(syn::Error::new(
                t.span(),
                format!("`type_name = {v:?}` is not an identifier"),
            ));
        }
    }
    let names: Vec<_> = c.fields.iter().filter(|f| f.attrs.name.is_some()).collect();
    match names.as_slice() {
        [] => errors.push(syn::Error::new(
            name_span(c),
            "a Stateful node needs a name field: add `#[stateful(name)] name: NodeName` (NodeName::auto() for `<TypeName><n>`)",
        )),
        [_] => {}
        [_, rest @ ..] => {
            for f in rest {
                errors.push(syn::Error::new(
                    f.attrs.name.expect("name field"),
                    "only one field may be `#[stateful(name)]`",
                ));
            }
        }
    }
    let mut keys: HashMap<&str, ()> = HashMap::new();
    for f in &c.fields {
        let a = &f.attrs;
        if let (Some(n), Some(_)) = (a.name, &a.rename) {
            errors.push(syn::Error::new(
                n,
                "`name` and `rename` conflict: the name field holds no variable",
            ));
        }
        if let (Some(n), Some(_)) = (a.name, a.skip) {
            errors.push(syn::Error::new(
                n,
                "`name` and `skip` conflict: the name field is never saved",
            ));
        }
        if let (Some(r), Some(_)) = (&a.rename, a.skip) {
            errors.push(syn::Error::new(
                r.span(),
                "`rename` and `skip` conflict: a skipped field is not saved",
            ));
        }
        if let Some(r) = &a.rename {
            let v = r.value();
            if v.is_empty() || v.contains('.') || v.contains('/') || v.chars().any(char::is_whitespace) {
                errors.push(syn::Error::new(
                    r.span(),
                    format!(
                        "`rename = {v:?}` is not a valid key: use a non-empty key without `.`, `/` or spaces"
                    ),
                ));
            }
        }
    }
    for f in c.state_fields() {
        if keys.insert(f.key.as_str(), ()).is_some() {
            let span = f.attrs.rename.as_ref().map_or_else(|| f.ty.span(), |r| r.span());
            errors.push(syn::Error::new(
                span,
                format!(
                    "two fields are saved under the key `{}`; rename one of them",
                    f.key
                ),
            ));
        }
    }
}

fn name_span(c: &Container) -> proc_macro2::Span {
    c.input.ident.span()
}

/// Python's `str.isidentifier()`, as node names must be.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => chars.all(|c| c.is_alphanumeric() || c == '_'),
        _ => false,
    }
}
