//! Parsing of `#[stateful(...)]` attributes.

use syn::spanned::Spanned;
use syn::{Attribute, LitStr};

/// Container attributes.
#[derive(Default)]
pub struct ContainerAttrs {
    pub krate: Option<(syn::Path, proc_macro2::Span)>,
    pub type_name: Option<LitStr>,
    pub custom: Option<proc_macro2::Span>,
}

/// Field attributes.
#[derive(Default)]
pub struct FieldAttrs {
    pub name: Option<proc_macro2::Span>,
    pub rename: Option<LitStr>,
    pub skip: Option<proc_macro2::Span>,
}

/// Collects errors so every misuse is reported at once.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    pub fn into_result(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &str, span: proc_macro2::Span, errors: &mut Errors) {
    if slot.is_some() {
        errors.push(syn::Error::new(span, format!("duplicate `{what}` attribute")));
    } else {
        *slot = Some(value);
    }
}

pub fn container(attrs: &[Attribute], errors: &mut Errors) -> ContainerAttrs {
    let mut out = ContainerAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("stateful")) {
        let res = attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            if meta.path.is_ident("crate") {
                let s: LitStr = meta.value()?.parse()?;
                let path = s.parse::<syn::Path>()?;
                set_once(&mut out.krate, (path, s.span()), "crate", span, errors);
            } else if meta.path.is_ident("type_name") {
                let s: LitStr = meta.value()?.parse()?;
                set_once(&mut out.type_name, s, "type_name", span, errors);
            } else if meta.path.is_ident("custom") {
                set_once(&mut out.custom, span, "custom", span, errors);
            } else {
                return Err(meta.error(format!(
                    "unknown stateful attribute `{}` on a struct; expected `crate`, `type_name` or `custom`",
                    path_text(&meta.path)
                )));
            }
            Ok(())
        });
        if let Err(e) = res {
            errors.push(e);
        }
    }
    out
}

pub fn field(attrs: &[Attribute], errors: &mut Errors) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("stateful")) {
        let res = attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            if meta.path.is_ident("name") {
                set_once(&mut out.name, span, "name", span, errors);
            } else if meta.path.is_ident("rename") {
                let s: LitStr = meta.value()?.parse()?;
                set_once(&mut out.rename, s, "rename", span, errors);
            } else if meta.path.is_ident("skip") {
                set_once(&mut out.skip, span, "skip", span, errors);
            } else {
                return Err(meta.error(format!(
                    "unknown stateful attribute `{}` on a field; expected `name`, `rename` or `skip`",
                    path_text(&meta.path)
                )));
            }
            Ok(())
        });
        if let Err(e) = res {
            errors.push(e);
        }
    }
    out
}

fn path_text(p: &syn::Path) -> String {
    p.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}
