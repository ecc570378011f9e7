//! `#[derive(Message)]` for filechannel. Use it through `filechannel`
//! (feature `derive`, on by default): `#[derive(filechannel::Message)]`.
//!
//! ```text
//! #[derive(filechannel::Message, serde::Serialize, serde::Deserialize)]
//! #[message(name = "orders.Order", version = 2, previous = OrderV1)]
//! struct Order { id: u64, qty: u32, note: Option<String> }
//! impl From<OrderV1> for Order { /* the migration */ }
//! ```
//!
//! # Keys
//!
//! - `name = "..."`: the stable name (default: the type's identifier). The
//!   names of the std types' messages (`String`, `u64`, `Vec`, `Box`, ...)
//!   are refused: a derived type's tag could equal theirs.
//! - `version = N`: 1 or more. Required whenever the attribute is written;
//!   a type without any `#[message]` attribute is version 1.
//! - `previous = Type`: the type of the version before. It must have the
//!   same name and a lower version (checked at compile time), and `Self`
//!   must implement `From<Type>`.
//! - `crate = "path"`: where the `filechannel` crate is, when the
//!   dependency is renamed (default `::filechannel`).
//!
//! On a field, `#[message(opaque)]`: the field's type counts by its tokens
//! only (for a type without a fingerprint, such as `std::time::Duration`).
//! A field type may refer to the type itself as `Self` or by its bare
//! identifier; a longer path ending in the identifier is taken to be
//! another type. Two types whose fields hold each other fail the build with
//! a cycle in `FINGERPRINT`: mark one of the two fields `opaque`.
//!
//! # What it generates
//!
//! For the `Order` above, in prose: an implementation of
//! `filechannel::Message` with `NAME = "orders.Order"` and `VERSION = 2`;
//! an implementation of `filechannel::Migrate<C>` for every codec `C` that
//! can decode `OrderV1` (and, recursively, everything before it), whose
//! `decode_older(version, body)` decodes a frame of version 1 as `OrderV1`
//! and converts it with `From`, and hands older versions down the chain;
//! and a constant item whose evaluation fails the build, pointing at
//! `previous`, if `OrderV1`'s name differs or its version is not lower.
//! With `previous`, also `Message::for_each_previous_schema`, so that a
//! receiver checks the older types against the schema registry. Generated
//! code names the runtime only through `<crate>::__private` and `::core`
//! (primitives included), so it works under a renamed dependency.
#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::{DeriveInput, LitInt, LitStr, Path, parse_macro_input, spanned::Spanned};

/// Implements `filechannel::Message` and `filechannel::Migrate`: a stable
/// name, a version and the migration chain for a type that travels on
/// typed channels. See the crate documentation.
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

const KEYS: &[&str] = &["name", "version", "previous", "crate"];

#[derive(Default)]
struct Attrs {
    name: Option<LitStr>,
    version: Option<(u32, Span)>,
    previous: Option<Path>,
    krate: Option<Path>,
    /// The first `#[message]` attribute.
    attr: Option<syn::Attribute>,
}

/// The names of the std types' [`Message`] impls: a derived type may not
/// take one, or its frames' tags could equal theirs.
const RESERVED: &[&str] = &[
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "bool", "char", "f32",
    "f64", "()", "String", "str", "slice", "Vec", "Option", "VecDeque", "BTreeSet", "HashSet", "Box", "BTreeMap",
    "HashMap", "tuple",
];

fn parse_attrs(input: &DeriveInput) -> syn::Result<Attrs> {
    let mut a = Attrs::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        a.attr.get_or_insert_with(|| attr.clone());
        attr.parse_nested_meta(|meta| {
            let twice = |key: &str| meta.error(format!("`{key}` is given twice"));
            if meta.path.is_ident("name") {
                if a.name.is_some() {
                    return Err(twice("name"));
                }
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
                }
                a.name = Some(lit);
            } else if meta.path.is_ident("version") {
                if a.version.is_some() {
                    return Err(twice("version"));
                }
                let lit: LitInt = meta.value()?.parse()?;
                let v: u32 = lit.base10_parse()?;
                if v == 0 {
                    return Err(syn::Error::new(lit.span(), "`version` starts at 1"));
                }
                a.version = Some((v, lit.span()));
            } else if meta.path.is_ident("previous") {
                if a.previous.is_some() {
                    return Err(twice("previous"));
                }
                a.previous = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("crate") {
                if a.krate.is_some() {
                    return Err(twice("crate"));
                }
                let lit: LitStr = meta.value()?.parse()?;
                a.krate = Some(lit.parse()?);
            } else {
                let got = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
                let hint = KEYS
                    .iter()
                    .find(|k| close(k, &got))
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                return Err(meta.error(format!(
                    "unknown key `{got}` in #[message(..)]: expected `name`, `version`, `previous` or `crate`{hint}"
                )));
            }
            Ok(())
        })?;
    }
    Ok(a)
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "#[derive(Message)] does not support generic types: a message's name and version must \
             identify one concrete type",
        ));
    }
    if let syn::Data::Union(u) = &input.data {
        return Err(syn::Error::new(
            u.union_token.span,
            "#[derive(Message)] supports structs and enums, not unions",
        ));
    }
    let a = parse_attrs(input)?;
    if let (Some(attr), None) = (&a.attr, &a.version) {
        return Err(syn::Error::new_spanned(
            attr,
            "#[message(..)] needs `version = N` (1 for a type's first version)",
        ));
    }
    let ident = &input.ident;
    let krate = a.krate.map_or_else(|| quote!(::filechannel), |p| quote!(#p));
    let p = quote!(#krate::__private);
    // `r#Foo` and `Foo` are one identifier (serde writes both as `Foo`).
    let name = a.name.as_ref().map_or_else(|| ident.unraw().to_string(), LitStr::value);
    if RESERVED.contains(&name.as_str()) {
        let message = format!(
            "`{name}` is the name the std types' messages use (their tags would collide); \
             give this type a name of its own: #[message(name = \"...\", version = 1)]"
        );
        return Err(match &a.name {
            Some(lit) => syn::Error::new(lit.span(), message),
            None => syn::Error::new(ident.span(), message),
        });
    }
    let version = a.version.map_or(1, |(v, _)| v);

    let migrate = match &a.previous {
        None => quote! {
            impl<__C: #p::Codec> #p::Migrate<__C> for #ident {}
        },
        Some(prev) => {
            let span = prev.span();
            let checks = quote_spanned! {span=>
                const _: () = {
                    ::core::assert!(
                        <#prev as #p::Message>::VERSION < #version,
                        "`previous` must name a lower version of this message"
                    );
                    ::core::assert!(
                        #p::str_eq(<#prev as #p::Message>::NAME, #name),
                        "`previous` must have the same `name` as this message"
                    );
                };
            };
            quote! {
                #checks
                impl<__C> #p::Migrate<__C> for #ident
                where
                    __C: #p::Decode<#prev>,
                    #prev: #p::Migrate<__C>,
                    #ident: ::core::convert::From<#prev>,
                {
                    fn decode_older(
                        version: ::core::primitive::u32,
                        body: &[::core::primitive::u8],
                    ) -> ::core::option::Option<::core::result::Result<Self, #p::CodecError>> {
                        let prev = if version == <#prev as #p::Message>::VERSION {
                            <__C as #p::Decode<#prev>>::decode(body)
                        } else {
                            <#prev as #p::Migrate<__C>>::decode_older(version, body)?
                        };
                        ::core::option::Option::Some(prev.map(<Self as ::core::convert::From<#prev>>::from))
                    }
                }
            }
        }
    };
    // A receiver checks the older types it reads against the registry.
    let previous_schemas = a.previous.as_ref().map(|prev| {
        quote! {
            fn for_each_previous_schema(f: &mut dyn ::core::ops::FnMut(#p::SchemaPart)) {
                <#prev as #p::Message>::for_each_schema(f);
                <#prev as #p::Message>::for_each_previous_schema(f);
            }
        }
    });
    let (fingerprint, shape) = shape(input, &p)?;
    Ok(quote! {
        impl #p::Message for #ident {
            const NAME: &'static ::core::primitive::str = #name;
            const VERSION: ::core::primitive::u32 = #version;
            const SCHEMA: ::core::option::Option<#p::Schema> = ::core::option::Option::Some(#p::Schema {
                fingerprint: <Self as #p::Shape>::FINGERPRINT,
                shape: #shape,
            });
            #previous_schemas
        }
        impl #p::Shape for #ident {
            const FINGERPRINT: ::core::primitive::u64 = #fingerprint;
        }
        #migrate
    })
}

/// Type tokens as a stable string: no whitespace at all, paths as written,
/// identifiers unraw (`r#gen::Msg` is `gen::Msg`).
fn normalise(ty: &syn::Type) -> String {
    unraw_tokens(quote!(#ty)).to_string().split_whitespace().collect()
}

/// `tokens` with every identifier in its plain spelling.
fn unraw_tokens(tokens: proc_macro2::TokenStream) -> proc_macro2::TokenStream {
    use proc_macro2::{Group, TokenTree};
    tokens
        .into_iter()
        .map(|t| match t {
            TokenTree::Ident(i) => TokenTree::Ident(i.unraw()),
            TokenTree::Group(g) => {
                let mut plain = Group::new(g.delimiter(), unraw_tokens(g.stream()));
                plain.set_span(g.span());
                TokenTree::Group(plain)
            }
            other => other,
        })
        .collect()
}

/// Whether `ty` is the type being derived: `Self`, or its bare identifier.
/// A longer path ending in the same identifier (`db::Config` inside
/// `Config`) is taken to be another type; if it is this one after all, the
/// build fails with a cycle in `FINGERPRINT` rather than fingerprinting a
/// different type as this one.
fn names_self(ty: &syn::Type, ident: &syn::Ident) -> bool {
    let syn::Type::Path(tp) = ty else { return false };
    let path = &tp.path;
    match (&tp.qself, path.leading_colon, path.segments.first()) {
        (None, None, Some(seg)) if path.segments.len() == 1 => {
            seg.ident.unraw() == ident.unraw() || seg.ident == "Self"
        }
        _ => false,
    }
}

/// The types inside `ty` that it is generic over or built from (a path's
/// type arguments, a tuple's, array's, slice's, reference's or pointer's
/// elements), or `None` if `ty` is of another kind.
fn inner_types(ty: &syn::Type) -> Option<Vec<&syn::Type>> {
    Some(match ty {
        syn::Type::Path(tp) => tp
            .path
            .segments
            .iter()
            .filter_map(|seg| match &seg.arguments {
                syn::PathArguments::AngleBracketed(args) => Some(args.args.iter()),
                _ => None,
            })
            .flatten()
            .filter_map(|arg| match arg {
                syn::GenericArgument::Type(t) => Some(t),
                syn::GenericArgument::AssocType(a) => Some(&a.ty),
                _ => None,
            })
            .collect(),
        syn::Type::Tuple(t) => t.elems.iter().collect(),
        syn::Type::Array(a) => vec![&*a.elem],
        syn::Type::Slice(s) => vec![&*s.elem],
        syn::Type::Reference(r) => vec![&*r.elem],
        syn::Type::Ptr(p) => vec![&*p.elem],
        syn::Type::Paren(p) => vec![&*p.elem],
        syn::Type::Group(g) => vec![&*g.elem],
        _ => return None,
    })
}

/// Whether `ty` mentions the type being derived (see [`names_self`]).
fn refers_to_self(ty: &syn::Type, ident: &syn::Ident) -> bool {
    if names_self(ty, ident) {
        return true;
    }
    match inner_types(ty) {
        Some(inner) => inner.into_iter().any(|t| refers_to_self(t, ident)),
        // Another kind (`dyn Trait<Self>`, a macro): by its tokens.
        None => quote!(#ty).into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => i.unraw() == ident.unraw() || i == "Self",
            _ => false,
        }),
    }
}

/// The fingerprint steps of a field's type: its `FINGERPRINT`, unless it
/// refers to the type being derived (a const cannot depend on itself).
/// Then it is taken apart: a fixed marker where it names the type itself,
/// and the fingerprint of every part that does not, so `Vec<(Label, Tree)>`
/// inside `Tree` still changes with `Label`. The field's type tokens,
/// folded before, give the structure around them.
fn field_steps(
    ty: &syn::Type,
    ident: &syn::Ident,
    p: &proc_macro2::TokenStream,
    steps: &mut Vec<proc_macro2::TokenStream>,
) {
    if !refers_to_self(ty, ident) {
        steps.push(quote!(let __fp = #p::combine(__fp, <#ty as #p::Shape>::FINGERPRINT);));
        return;
    }
    match inner_types(ty) {
        Some(inner) if !names_self(ty, ident) => {
            for t in inner {
                field_steps(t, ident, p, steps);
            }
            // An array's length is a value, not in its tokens when it is a
            // const's name (postcard writes no length: it is the shape).
            if let syn::Type::Array(a) = ty {
                let len = &a.len;
                steps.push(quote!(let __fp = #p::combine(__fp, (#len) as ::core::primitive::u64);));
            }
        }
        // The type itself, or another kind that mentions it.
        _ => steps.push(quote!(let __fp = #p::combine(__fp, #p::name_hash("<recursive>"));)),
    }
}

/// A field's contribution: its `name:type` text, and its type unless the
/// text alone counts (`None` for kinds and variant names).
type Fold<'a> = dyn FnMut(String, Option<(&syn::Type, bool)>) + 'a;

/// Whether a field carries `#[message(opaque)]`.
fn is_opaque(field: &syn::Field) -> syn::Result<bool> {
    let mut opaque = false;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("opaque") {
                opaque = true;
                Ok(())
            } else {
                Err(meta.error("the only key on a field is `opaque`: #[message(opaque)]"))
            }
        })?;
    }
    Ok(opaque)
}

/// The fingerprint expression (a const fold over field names, type tokens
/// and the fields' own fingerprints) and a readable description of the
/// shape.
fn shape(input: &DeriveInput, p: &proc_macro2::TokenStream) -> syn::Result<(proc_macro2::TokenStream, String)> {
    let ident = &input.ident;
    let mut steps = Vec::new();
    let mut fold = |text: String, ty: Option<(&syn::Type, bool)>| {
        steps.push(quote!(let __fp = #p::combine(__fp, #p::name_hash(#text));));
        // An opaque field counts by its tokens only, nothing inside it.
        if let Some((ty, false)) = ty {
            field_steps(ty, ident, p, &mut steps);
        }
    };
    let fields_desc = |fields: &syn::Fields, fold: &mut Fold<'_>| -> syn::Result<String> {
        let mut parts = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let ty = normalise(&f.ty);
            let opaque = is_opaque(f)?;
            // Unraw: `r#gen` is `gen` (what serde writes; an edition
            // migration adds the `r#`).
            let label = f
                .ident
                .as_ref()
                .map_or_else(|| i.to_string(), |id| id.unraw().to_string());
            let text = format!("{label}:{ty}{}", if opaque { "(opaque)" } else { "" });
            fold(text.clone(), Some((&f.ty, opaque)));
            parts.push(text);
        }
        // `S {}` and `S()` go on the wire unlike `S` (JSON: `{}`, `[]`,
        // `null`): with no field to tell them apart, a marker does. (Only
        // for no fields, so other fingerprints stay as they were.)
        match fields {
            syn::Fields::Named(n) if n.named.is_empty() => fold("{}".into(), None),
            syn::Fields::Unnamed(u) if u.unnamed.is_empty() => fold("()".into(), None),
            _ => {}
        }
        Ok(match fields {
            syn::Fields::Named(_) => format!("{{{}}}", parts.join(",")),
            syn::Fields::Unnamed(_) => format!("({})", parts.join(",")),
            syn::Fields::Unit => String::new(),
        })
    };
    let desc = match &input.data {
        syn::Data::Struct(st) => {
            fold("struct".into(), None);
            format!("struct{}", fields_desc(&st.fields, &mut fold)?)
        }
        syn::Data::Enum(en) => {
            fold("enum".into(), None);
            let mut vs = Vec::new();
            for v in &en.variants {
                if let Some(attr) = v.attrs.iter().find(|a| a.path().is_ident("message")) {
                    return Err(syn::Error::new_spanned(
                        attr,
                        "#[message(..)] goes on the type, or as #[message(opaque)] on a field; not on a variant",
                    ));
                }
                // An explicit discriminant is part of the shape: with
                // `serde_repr`, say, it is what goes on the wire.
                let label = match &v.discriminant {
                    Some((_, expr)) => {
                        let tokens: String = quote!(#expr).to_string().split_whitespace().collect();
                        format!("{}={tokens}", v.ident.unraw())
                    }
                    None => v.ident.unraw().to_string(),
                };
                fold(format!("variant:{label}"), None);
                vs.push(format!("{label}{}", fields_desc(&v.fields, &mut fold)?));
            }
            format!("enum{{{}}}", vs.join("|"))
        }
        syn::Data::Union(u) => return Err(syn::Error::new(u.union_token.span, "unions are not supported")),
    };
    let fp = quote!({
        let __fp: ::core::primitive::u64 = #p::name_hash("filechannel.shape.v1");
        #(#steps)*
        __fp
    });
    Ok((fp, desc))
}

/// Whether `got` is a likely misspelling of `key` (edit distance 2 or less).
fn close(key: &str, got: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (key.chars().collect(), got.chars().collect());
    if a.len().abs_diff(b.len()) > 2 {
        return false;
    }
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
