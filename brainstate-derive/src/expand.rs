//! Code generation.

use crate::ast::Container;
use crate::attr::Errors;
use crate::valid;
use proc_macro2::{TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::DeriveInput;

pub fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let parsed = Container::parse(input, &mut errors);
    if let Some(c) = &parsed {
        valid::check(c, &mut errors);
    }
    let krate = parsed
        .as_ref()
        .and_then(|c| c.attrs.krate.as_ref())
        .map_or_else(|| quote!(::brainstate), |(p, _)| quote!(#p));
    match (errors.into_result(), parsed) {
        (Ok(()), Some(c)) => expand(&c, &krate),
        (Err(e), _) => {
            let fallback = minimal_impl(input, &krate);
            let e = e.to_compile_error();
            quote!(#e #fallback)
        }
        (Ok(()), None) => unreachable!("a failed parse records an error"),
    }
}

/// An impl that makes uses of the type compile, so the user sees only the real error.
fn minimal_impl(input: &DeriveInput, krate: &TokenStream) -> TokenStream {
    let ident = &input.ident;
    let (ig, tg, wc) = input.generics.split_for_impl();
    quote! {
        impl #ig #krate::Stateful for #ident #tg #wc {
            fn type_name(&self) -> &'static str { "" }
            fn node_name(&self) -> &#krate::NodeName { unimplemented!() }
            fn name(&self) -> &str { "" }
            fn visit_variables<'__a>(&'__a self, _: &mut dyn FnMut(&str, &'__a #krate::Variable)) {}
            fn visit_children<'__a>(&'__a self, _: &mut dyn FnMut(&'__a dyn #krate::Stateful)) {}
            fn visit_mut<'__a>(
                &'__a mut self,
                _: &mut dyn FnMut(&str, &'__a mut #krate::Variable),
                _: &mut dyn FnMut(&'__a mut dyn #krate::Stateful),
            ) {}
        }
    }
}

fn mentions(ty: TokenStream, params: &[syn::Ident]) -> bool {
    ty.into_iter().any(|t| match t {
        TokenTree::Ident(i) => params.contains(&i),
        TokenTree::Group(g) => mentions(g.stream(), params),
        _ => false,
    })
}

fn expand(c: &Container, krate: &TokenStream) -> TokenStream {
    let input = c.input;
    let ident = &input.ident;
    let type_name = c
        .attrs
        .type_name
        .as_ref()
        .map_or_else(|| ident.to_string(), |t| t.value());
    let name_field = c.name_field().expect("validated");
    let name_member = &name_field.member;
    let name_ref = quote_spanned!(name_field.ty.span()=> &self.#name_member);

    // Generic fields must be state fields for the trait dispatch to see them.
    let params: Vec<syn::Ident> = input.generics.type_params().map(|p| p.ident.clone()).collect();
    let mut generics = input.generics.clone();
    for f in c.state_fields() {
        if mentions(f.ty.to_token_stream(), &params) {
            let ty = f.ty;
            generics
                .make_where_clause()
                .predicates
                .push(syn::parse_quote!(#ty: #krate::StateField));
        }
    }
    let (ig, tg, wc) = generics.split_for_impl();

    let members: Vec<_> = c.state_fields().map(|f| &f.member).collect();
    let keys: Vec<_> = c.state_fields().map(|f| f.key.as_str()).collect();
    let rename_checks = c.state_fields().filter(|f| f.attrs.rename.is_some()).map(|f| {
        let ty = f.ty;
        quote_spanned!(ty.span()=> #krate::__private::assert_variable_field::<#ty>();)
    });
    let custom = c.attrs.custom.map(|span| {
        let custom_state = quote_spanned!(span=> #krate::CustomState);
        quote! {
            fn save_state(&self) -> #krate::StateDict {
                <Self as #custom_state>::save_local(self)
            }
            fn check_state(&self, state: &#krate::StateDict, options: &#krate::LoadOptions) -> #krate::LocalCheck {
                <Self as #custom_state>::check_local(self, state, options)
            }
            fn apply_state(&mut self, state: &#krate::StateDict, options: &#krate::LoadOptions) {
                <Self as #custom_state>::apply_local(self, state, options)
            }
        }
    });

    quote! {
        #[automatically_derived]
        impl #ig #krate::Stateful for #ident #tg #wc {
            fn type_name(&self) -> &'static str {
                #type_name
            }
            fn node_name(&self) -> &#krate::NodeName {
                #name_ref
            }
            fn name(&self) -> &str {
                #krate::NodeName::resolve(#krate::Stateful::node_name(self), self)
            }
            fn visit_variables<'__a>(&'__a self, __f: &mut dyn FnMut(&str, &'__a #krate::Variable)) {
                #[allow(unused_imports)]
                use #krate::__private::{ViaPlain as _, ViaStateField as _};
                #(#rename_checks)*
                #( (&#krate::__private::FieldRef(&self.#members)).__visit_variables(#keys, __f); )*
            }
            fn visit_children<'__a>(&'__a self, __f: &mut dyn FnMut(&'__a dyn #krate::Stateful)) {
                #[allow(unused_imports)]
                use #krate::__private::{ViaPlain as _, ViaStateField as _};
                #( (&#krate::__private::FieldRef(&self.#members)).__visit_children(__f); )*
            }
            fn visit_mut<'__a>(
                &'__a mut self,
                __vars: &mut dyn FnMut(&str, &'__a mut #krate::Variable),
                __children: &mut dyn FnMut(&'__a mut dyn #krate::Stateful),
            ) {
                #[allow(unused_imports)]
                use #krate::__private::{ViaPlainMut as _, ViaStateFieldMut as _};
                #( (&mut #krate::__private::FieldMut(::core::option::Option::Some(&mut self.#members)))
                    .__visit_mut(#keys, __vars, __children); )*
            }
            #custom
        }
    }
}
