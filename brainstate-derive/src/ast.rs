//! The parsed model of a deriving struct.

use crate::attr::{self, ContainerAttrs, Errors, FieldAttrs};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Member, Type};

pub struct Container<'a> {
    pub input: &'a DeriveInput,
    pub attrs: ContainerAttrs,
    pub fields: Vec<Field<'a>>,
}

pub struct Field<'a> {
    pub member: Member,
    pub ty: &'a Type,
    pub attrs: FieldAttrs,
    /// The key a variable in this field is saved under (rename, or the field's name).
    pub key: String,
}

impl<'a> Container<'a> {
    /// Parses the input; `None` for enums and unions (an error is recorded).
    pub fn parse(input: &'a DeriveInput, errors: &mut Errors) -> Option<Container<'a>> {
        let attrs = attr::container(&input.attrs, errors);
        let fields = match &input.data {
            Data::Struct(s) => &s.fields,
            Data::Enum(e) => {
                errors.push(syn::Error::new(
                    e.enum_token.span(),
                    "#[derive(Stateful)] supports structs only, not enums: a node is a struct of variables and child nodes",
                ));
                return None;
            }
            Data::Union(u) => {
                errors.push(syn::Error::new(
                    u.union_token.span(),
                    "#[derive(Stateful)] supports structs only, not unions",
                ));
                return None;
            }
        };
        let fields = match fields {
            Fields::Named(f) => f.named.iter().collect::<Vec<_>>(),
            Fields::Unnamed(f) => f.unnamed.iter().collect(),
            Fields::Unit => Vec::new(),
        };
        let fields = fields
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let member = match &f.ident {
                    Some(id) => Member::Named(id.clone()),
                    None => Member::Unnamed(i.into()),
                };
                let attrs = attr::field(&f.attrs, errors);
                let key = match (&attrs.rename, &f.ident) {
                    (Some(r), _) => r.value(),
                    (None, Some(id)) => id.to_string().trim_start_matches("r#").to_string(),
                    (None, None) => i.to_string(),
                };
                Field {
                    member,
                    ty: &f.ty,
                    attrs,
                    key,
                }
            })
            .collect();
        Some(Container { input, attrs, fields })
    }

    /// Fields that are visited (not the name field, not skipped).
    pub fn state_fields(&self) -> impl Iterator<Item = &Field<'a>> {
        self.fields
            .iter()
            .filter(|f| f.attrs.name.is_none() && f.attrs.skip.is_none())
    }

    /// The field marked `#[stateful(name)]`.
    pub fn name_field(&self) -> Option<&Field<'a>> {
        self.fields.iter().find(|f| f.attrs.name.is_some())
    }
}
