//! `#[derive(Stateful)]` for brainstate: parse -> validate -> expand.
//!
//! ```text
//! #[derive(Stateful)]
//! #[stateful(type_name = "Dense")]          // optional: the name auto names count (`Dense0`)
//! struct Linear {
//!     #[stateful(name)] name: NodeName,      // required: the node's name handle
//!     #[stateful(rename = "W")] w: Variable, // saved as `<name>.W`
//!     children: Vec<Lif>,                    // child nodes, traversed in field order
//!     tau: f32,                              // plain data: not saved
//! }
//! ```
//! Container attributes: `crate = "path"` (default `::brainstate`), `type_name = "..."`,
//! `custom` (local state from the type's `CustomState` impl). Field attributes: `name`,
//! `rename = "..."`, `skip`.

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Derives `Stateful`: naming, variables, children, and local save/load.
#[proc_macro_derive(Stateful, attributes(stateful))]
pub fn derive_stateful(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
