use proc_macro::TokenStream;
#[proc_macro_derive(Stateful, attributes(stateful))]
pub fn derive_stateful(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
