//! `#[derive(Message)]` for filechannel. Use it through `filechannel`
//! (feature `derive`, on by default): `#[derive(filechannel::Message)]`.
//!
//! ```text
//! #[derive(filechannel::Message, serde::Serialize, serde::Deserialize)]
//! #[message(name = "orders.Order", version = 2)]
//! struct Order { id: u64, qty: u32 }
//! ```
//!
//! Without the attribute the name is the type's identifier and the version
//! is 1. Keys: `name` (a string), `version` (an integer, 1 or more).
#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{DeriveInput, LitInt, LitStr, parse_macro_input, spanned::Spanned};

/// Implements `filechannel::Message`: a stable name and a version for a type
/// that travels on typed channels. See the crate documentation.
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

const KEYS: &[&str] = &["name", "version"];

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "#[derive(Message)] does not support generic types: a message's name and version must \
             identify one concrete type",
        ));
    }
    let ident = &input.ident;
    let mut name: Option<LitStr> = None;
    let mut version: Option<(u32, Span)> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                if name.is_some() {
                    return Err(meta.error("`name` is given twice"));
                }
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
                }
                name = Some(lit);
                Ok(())
            } else if meta.path.is_ident("version") {
                if version.is_some() {
                    return Err(meta.error("`version` is given twice"));
                }
                let lit: LitInt = meta.value()?.parse()?;
                let v: u32 = lit.base10_parse()?;
                if v == 0 {
                    return Err(syn::Error::new(lit.span(), "`version` starts at 1"));
                }
                version = Some((v, lit.span()));
                Ok(())
            } else {
                let got = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
                let hint = KEYS
                    .iter()
                    .find(|k| close(k, &got))
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                Err(meta.error(format!(
                    "unknown key `{got}` in #[message(..)]: expected one of `name`, `version`{hint}"
                )))
            }
        })?;
    }
    let name = name.map_or_else(|| ident.to_string(), |l| l.value());
    let version = version.map_or(1, |(v, _)| v);
    Ok(quote! {
        impl ::filechannel::Message for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
        }
    })
}

/// Whether `got` is one edit (or one swap) away from `key`.
fn close(key: &str, got: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (key.chars().collect(), got.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    // Levenshtein distance, small strings.
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}
