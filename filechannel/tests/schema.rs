//! Schema fingerprints and the channel's schema registry: a changed struct
//! whose version was not bumped is refused, across a reopen, even when the
//! change is deep inside a nested type; receivers check but never register;
//! an unfinished registry write is ignored; fingerprints are pinned.

use filechannel::codec::{Codec, Postcard};
use filechannel::{Error, FileChannel, Message, REGISTRY_FILE, SchemaError, Shape};
use serde::{Deserialize, Serialize};

mod before {
    use super::*;
    #[derive(Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
    #[message(name = "shop.Order", version = 1)]
    pub struct Order {
        pub id: u64,
        pub items: Vec<Item>,
    }
    #[derive(Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
    pub struct Item {
        pub sku: String,
        pub qty: u32,
    }
}

/// Same name and version, a field added: the forgotten version bump.
mod added_field {
    use super::*;
    #[derive(Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
    #[message(name = "shop.Order", version = 1)]
    pub struct Order {
        pub id: u64,
        pub items: Vec<before::Item>,
        pub note: Option<String>,
    }
}

/// Same `Order` tokens, but `Item` changed inside the `Vec`.
mod nested_change {
    use super::*;
    #[derive(Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
    #[message(name = "shop.Order", version = 1)]
    pub struct Order {
        pub id: u64,
        pub items: Vec<Item>,
    }
    #[derive(Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
    pub struct Item {
        pub sku: String,
        pub qty: u64,
    }
}

fn refused<T>(r: Result<T, Error>) -> bool {
    matches!(
        r,
        Err(Error::Schema(SchemaError::Changed {
            name: "shop.Order",
            version: 1,
            ..
        }))
    )
}

fn mismatch_across_reopen<C: Codec>() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = FileChannel::open(dir.path()).unwrap();
        ch.typed_tx::<before::Order, C>().unwrap();
        ch.close().unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join(REGISTRY_FILE)).unwrap();
    assert!(text.contains("shop.Order\tstruct{id:u64,items:Vec<Item>}"), "{text}");
    let ch = FileChannel::open(dir.path()).unwrap();
    assert!(refused(ch.typed_tx::<added_field::Order, C>()));
    assert!(refused(ch.typed_rx::<added_field::Order, C>()));
    assert!(refused(ch.typed_tx::<nested_change::Order, C>()));
    assert!(refused(ch.typed_rx_ack::<nested_change::Order, C>()));
    let e = ch.typed_tx::<added_field::Order, C>().unwrap_err().to_string();
    assert!(e.contains("bump its version"), "{e}");
    // The registered shape still works.
    ch.typed_tx::<before::Order, C>().unwrap();
    ch.typed_rx::<before::Order, C>().unwrap();
    let s = ch.schemas().unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].name.as_str(), s[0].version), ("shop.Order", 1));
    assert_eq!(s[0].fingerprint, <before::Order as Shape>::FINGERPRINT);
}

#[test]
fn postcard_mismatch_across_reopen() {
    mismatch_across_reopen::<Postcard>();
}

#[cfg(feature = "rkyv")]
#[test]
fn rkyv_mismatch_across_reopen() {
    mismatch_across_reopen::<filechannel::codec::Rkyv>();
}

#[test]
fn receivers_check_but_never_register() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    ch.typed_rx::<before::Order, Postcard>().unwrap();
    ch.typed_rx_ack::<added_field::Order, Postcard>().unwrap();
    assert!(!dir.path().join(REGISTRY_FILE).exists());
    assert!(ch.schemas().unwrap().is_empty());
    // The first sender registers; then the other shape is refused.
    ch.typed_tx::<added_field::Order, Postcard>().unwrap();
    assert!(refused(ch.typed_tx::<before::Order, Postcard>()));
}

#[test]
fn an_unfinished_registry_write_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = FileChannel::open(dir.path()).unwrap();
        ch.typed_tx::<before::Order, Postcard>().unwrap();
        ch.close().unwrap();
    }
    // A crash while rewriting: a torn temporary file next to the registry.
    std::fs::write(dir.path().join("schema.registry.tmp"), b"# filechannel schema reg").unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    assert!(refused(ch.typed_tx::<added_field::Order, Postcard>()));
    assert!(!dir.path().join("schema.registry.tmp").exists());
    // A damaged registry is a typed error, and left alone.
    drop(ch);
    std::fs::write(dir.path().join(REGISTRY_FILE), b"# header\nnot a line\n").unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    assert!(matches!(
        ch.typed_tx::<before::Order, Postcard>(),
        Err(Error::Schema(SchemaError::Corrupt { line: 2, .. }))
    ));
    assert_eq!(
        std::fs::read(dir.path().join(REGISTRY_FILE)).unwrap(),
        b"# header\nnot a line\n"
    );
}

/// A recursive type compiles (the field that refers back contributes a
/// fixed marker); a field of a type without `Shape` is `opaque`.
#[derive(Message, Serialize, Deserialize)]
struct Node {
    value: u32,
    children: Vec<Node>,
    parent: Option<Box<Self>>,
    #[message(opaque)]
    elapsed: std::time::Duration,
}

#[derive(Message, Serialize, Deserialize)]
enum Event {
    Start,
    Tick(u64),
    Stop { reason: String },
}

/// A `Box` field: `Box<T>` has a tag of its own (rkyv lays it out apart
/// from `T`), but its shape is `T`'s, so this fingerprint is what it was
/// before that.
#[derive(Message, Serialize, Deserialize)]
struct Boxed {
    item: Box<before::Item>,
}

/// Fingerprints are stored on disk: they must never change with a compiler,
/// `proc-macro2` or crate upgrade. These literals pin them.
#[test]
fn fingerprints_are_pinned() {
    let pins = [
        ("u64", <u64 as Shape>::FINGERPRINT, 0x4d35d3193e8d66f2),
        ("Vec<String>", <Vec<String> as Shape>::FINGERPRINT, 0x6474bd0663b47d6f),
        ("before::Item", <before::Item as Shape>::FINGERPRINT, 0x80fd8ce9988d3917),
        (
            "before::Order",
            <before::Order as Shape>::FINGERPRINT,
            0x9502271e33f04aad,
        ),
        ("Node", <Node as Shape>::FINGERPRINT, 0x07863d3359cb2089),
        ("Event", <Event as Shape>::FINGERPRINT, 0x989155a0d69f1957),
        ("Boxed", <Boxed as Shape>::FINGERPRINT, 0xd514d08df365af7f),
        // Since the second review of 2026-11-29: raw identifiers, empty
        // field lists, an array in a recursive field.
        (
            "raw::plain::Point",
            <raw::plain::Point as Shape>::FINGERPRINT,
            0xff50b1cf3c2540fc,
        ),
        (
            "empty_forms::braces::E",
            <empty_forms::braces::E as Shape>::FINGERPRINT,
            0xf04eedcb668256f7,
        ),
        (
            "empty_forms::parens::S",
            <empty_forms::parens::S as Shape>::FINGERPRINT,
            0x17a374e549d29c01,
        ),
        (
            "fanout::two::Node",
            <fanout::two::Node as Shape>::FINGERPRINT,
            0xf0aeadfbcf37e31d,
        ),
    ];
    let changed: Vec<String> = pins
        .iter()
        .filter(|(_, got, pinned)| got != pinned)
        .map(|(what, got, _)| format!("{what}: {got:#018x}"))
        .collect();
    assert!(changed.is_empty(), "fingerprints changed: {changed:#?}");
    assert_ne!(
        <before::Order as Shape>::FINGERPRINT,
        <nested_change::Order as Shape>::FINGERPRINT
    );
    assert_eq!(
        <Event as Message>::SCHEMA.unwrap().shape,
        "enum{Start|Tick(0:u64)|Stop{reason:String}}"
    );
    assert_eq!(
        <Node as Message>::SCHEMA.unwrap().shape,
        "struct{value:u32,children:Vec<Node>,parent:Option<Box<Self>>,elapsed:std::time::Duration(opaque)}"
    );
}

/// A derived type inside a std composite is checked as the bare type is:
/// `Vec<Order>` with `Order` changed (same name and version) is refused for
/// senders and receivers alike, and so are `Option`, tuples, maps and `Box`
/// around it. (Only the outermost type was checked: `Vec<Order>` decoded
/// the changed `Order` as garbage, or silently, fields swapped.)
#[test]
fn a_changed_type_inside_a_std_composite_is_refused() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let tx = ch.typed_tx::<Vec<before::Order>, Postcard>().unwrap();
    assert!(refused(ch.typed_rx::<Vec<added_field::Order>, Postcard>()));
    assert!(refused(ch.typed_tx::<Vec<added_field::Order>, Postcard>()));
    assert!(refused(ch.typed_rx::<Option<(u32, added_field::Order)>, Postcard>()));
    assert!(refused(
        ch.typed_rx::<BTreeMap<String, Box<added_field::Order>>, Postcard>()
    ));
    assert!(refused(ch.typed_rx_ack::<Box<[nested_change::Order]>, Postcard>()));
    // The unchanged type inside a composite passes, and reads back.
    let mut rx = ch.typed_rx::<Vec<before::Order>, Postcard>().unwrap();
    tx.send(&vec![before::Order { id: 7, items: vec![] }]).unwrap();
    assert_eq!(rx.recv().unwrap()[0].id, 7);
}

/// A field whose type path ends in the type's own name (`db::Config` inside
/// `Config`) is another type, fingerprinted as such: it used to count as a
/// reference back to `Config`, so two binaries whose `db::Config` differed
/// (fields swapped) passed the registry and postcard swapped the values.
mod config_a {
    use super::*;
    pub mod db {
        use super::*;
        #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
        pub struct Config {
            pub min: u32,
            pub max: u32,
        }
    }
    #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
    #[message(name = "app.Config", version = 1)]
    pub struct Config {
        pub db: db::Config,
    }
}
mod config_b {
    use super::*;
    pub mod db {
        use super::*;
        #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
        pub struct Config {
            pub max: u32,
            pub min: u32,
        }
    }
    #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
    #[message(name = "app.Config", version = 1)]
    pub struct Config {
        pub db: db::Config,
    }
}

/// A recursive type whose recursive field also holds another type: the
/// other type's fingerprint counts (it used to be replaced, with the whole
/// field, by the recursion marker).
mod tree_a {
    use super::*;
    #[derive(Message, Serialize, Deserialize)]
    pub struct Label {
        pub text: String,
    }
    #[derive(Message, Serialize, Deserialize)]
    #[message(name = "t.Tree", version = 1)]
    pub struct Tree {
        pub kids: Vec<(Label, Tree)>,
    }
}
mod tree_b {
    use super::*;
    #[derive(Message, Serialize, Deserialize)]
    pub struct Label {
        pub text: String,
        pub weight: u32,
    }
    #[derive(Message, Serialize, Deserialize)]
    #[message(name = "t.Tree", version = 1)]
    pub struct Tree {
        pub kids: Vec<(Label, Tree)>,
    }
}

/// Explicit discriminants are part of the shape (with `serde_repr` they are
/// the wire values).
mod repr_a {
    use super::*;
    #[derive(Message)]
    #[allow(dead_code)]
    pub enum Level {
        Low = 1,
        High = 2,
    }
}
mod repr_b {
    use super::*;
    #[derive(Message)]
    #[allow(dead_code)]
    pub enum Level {
        Low = 2,
        High = 1,
    }
}

#[test]
fn a_field_of_another_type_with_the_same_name_is_fingerprinted() {
    assert_ne!(
        <config_a::Config as Shape>::FINGERPRINT,
        <config_b::Config as Shape>::FINGERPRINT
    );
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    ch.typed_tx::<config_a::Config, Postcard>()
        .unwrap()
        .send(&config_a::Config {
            db: config_a::db::Config { min: 1, max: 9 },
        })
        .unwrap();
    assert!(matches!(
        ch.typed_rx::<config_b::Config, Postcard>(),
        Err(Error::Schema(SchemaError::Changed { name: "app.Config", .. }))
    ));
}

#[test]
fn the_other_parts_of_a_recursive_field_are_fingerprinted() {
    assert_ne!(
        <tree_a::Tree as Shape>::FINGERPRINT,
        <tree_b::Tree as Shape>::FINGERPRINT
    );
}

#[test]
fn explicit_discriminants_are_fingerprinted() {
    assert_ne!(
        <repr_a::Level as Shape>::FINGERPRINT,
        <repr_b::Level as Shape>::FINGERPRINT
    );
    assert_eq!(<repr_a::Level as Message>::SCHEMA.unwrap().shape, "enum{Low=1|High=2}");
}

/// The same type spelled with and without raw identifiers (what an edition
/// migration does to a field named like a new keyword).
#[allow(non_camel_case_types, dead_code)]
mod raw {
    use super::*;
    pub mod kinds {
        use super::*;
        #[derive(Message)]
        pub struct Kind(pub u8);
    }
    pub mod plain {
        use super::*;
        #[derive(Message)]
        pub struct Point {
            pub foo: u32,
            pub e: Dir,
            pub k: super::kinds::Kind,
        }
        #[derive(Message)]
        pub enum Dir {
            Up,
            Down { by: u8 },
        }
    }
    pub mod spelled_raw {
        use super::*;
        #[derive(Message)]
        pub struct r#Point {
            pub r#foo: u32,
            pub r#e: Dir,
            pub r#k: super::r#kinds::r#Kind,
        }
        #[derive(Message)]
        pub enum Dir {
            r#Up,
            r#Down { r#by: u8 },
        }
    }
}

/// `r#foo` and `foo` are one identifier, and serde writes both as `foo`:
/// the fingerprint, the shape and the default name agree. They differed
/// (from a read-only review), so a crate moved to a new edition, with
/// `r#` added to fields named like its new keywords, was refused by every
/// channel it had written.
#[test]
fn raw_identifiers_are_their_plain_spelling() {
    use raw::{plain, spelled_raw as r};
    assert_eq!(<plain::Point as Shape>::FINGERPRINT, <r::Point as Shape>::FINGERPRINT);
    assert_eq!(<plain::Dir as Shape>::FINGERPRINT, <r::Dir as Shape>::FINGERPRINT);
    assert_eq!(<r::Point as Message>::NAME, "Point");
    assert_eq!(
        <r::Dir as Message>::SCHEMA.unwrap().shape,
        <plain::Dir as Message>::SCHEMA.unwrap().shape
    );
}

/// Unit, `{}` and `()` forms, which serde encodes differently (JSON
/// `null`, `{}`, `[]`; a variant `"A"`, `{"A":{}}`, `{"A":[]}`).
#[allow(dead_code)]
mod empty_forms {
    use super::*;
    macro_rules! forms {
        ($($m:ident: $s:item $e:item)*) => {$(
            pub mod $m {
                use super::*;
                #[derive(Message)]
                #[message(name = "t.S", version = 1)]
                $s
                #[derive(Message)]
                #[message(name = "t.E", version = 1)]
                $e
            }
        )*};
    }
    forms! {
        unit: pub struct S; pub enum E { A }
        braces: pub struct S {} pub enum E { A {} }
        parens: pub struct S(); pub enum E { A() }
    }
}

/// Those forms fingerprint differently: they all folded the same steps
/// (from a read-only review), so a change between them passed the registry
/// and failed every decode.
#[test]
fn unit_braces_and_parens_are_fingerprinted_apart() {
    use empty_forms::{braces, parens, unit};
    let s = [
        <unit::S as Shape>::FINGERPRINT,
        <braces::S as Shape>::FINGERPRINT,
        <parens::S as Shape>::FINGERPRINT,
    ];
    let e = [
        <unit::E as Shape>::FINGERPRINT,
        <braces::E as Shape>::FINGERPRINT,
        <parens::E as Shape>::FINGERPRINT,
    ];
    for set in [s, e] {
        assert!(set[0] != set[1] && set[1] != set[2] && set[0] != set[2], "{set:x?}");
    }
}

/// A recursive field's array length, named by a const: not in its tokens.
#[allow(dead_code)]
mod fanout {
    use super::*;
    pub mod two {
        use super::*;
        const FANOUT: usize = 2;
        #[derive(Message)]
        pub struct Node {
            pub v: u32,
            pub kids: [Option<Box<Node>>; FANOUT],
        }
    }
    pub mod three {
        use super::*;
        const FANOUT: usize = 3;
        #[derive(Message)]
        pub struct Node {
            pub v: u32,
            pub kids: [Option<Box<Node>>; FANOUT],
        }
    }
}

/// The array's length counts inside a recursive field too (postcard writes
/// none: it is the shape). It did not (from a read-only review).
#[test]
fn a_recursive_fields_array_length_is_fingerprinted() {
    assert_ne!(
        <fanout::two::Node as Shape>::FINGERPRINT,
        <fanout::three::Node as Shape>::FINGERPRINT
    );
}

/// Version 1 of `shop.Item2` as it was sent, and two version-2 readers:
/// one whose `previous` is that type, one whose `previous` has the fields
/// swapped (a manual upgrade gone wrong).
mod chain {
    use super::*;
    pub mod v1 {
        use super::*;
        #[derive(Message, Serialize, Deserialize, Debug)]
        #[message(name = "shop.Item2", version = 1)]
        pub struct Item {
            pub a: u32,
            pub b: u32,
        }
    }
    pub mod v1_swapped {
        use super::*;
        #[derive(Message, Serialize, Deserialize, Debug)]
        #[message(name = "shop.Item2", version = 1)]
        pub struct Item {
            pub b: u32,
            pub a: u32,
        }
    }
    #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
    #[message(name = "shop.Item2", version = 2, previous = v1::Item)]
    pub struct Item {
        pub a: u32,
        pub b: u32,
        pub c: u32,
    }
    impl From<v1::Item> for Item {
        fn from(o: v1::Item) -> Self {
            Item { a: o.a, b: o.b, c: 0 }
        }
    }
    pub mod wrong {
        use super::*;
        #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
        #[message(name = "shop.Item2", version = 2, previous = v1_swapped::Item)]
        pub struct Item {
            pub a: u32,
            pub b: u32,
            pub c: u32,
        }
        impl From<v1_swapped::Item> for Item {
            fn from(o: v1_swapped::Item) -> Self {
                Item { a: o.a, b: o.b, c: 0 }
            }
        }
    }
}

/// A receiver checks the older types it reads frames of against the
/// registry: before, `wrong::Item` read the version-1 frame `{a: 1, b: 2}`
/// as `{a: 2, b: 1}`.
#[test]
fn a_receiver_checks_its_previous_chain_where_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    // Nothing recorded for version 1 yet: nothing to compare with.
    ch.typed_rx::<chain::wrong::Item, Postcard>().unwrap();
    ch.typed_tx::<chain::v1::Item, Postcard>()
        .unwrap()
        .send(&chain::v1::Item { a: 1, b: 2 })
        .unwrap();
    let e = ch.typed_rx::<chain::wrong::Item, Postcard>().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Schema(SchemaError::PreviousChanged {
                name: "shop.Item2",
                version: 1,
                ..
            })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("restore that type"), "{e}");
    // Senders of version 2 do not read version 1: not checked, and version 1
    // is not recorded from the chain.
    ch.typed_tx::<chain::wrong::Item, Postcard>().unwrap();
    let mut rx = ch.typed_rx::<chain::Item, Postcard>().unwrap();
    assert_eq!(rx.try_recv().unwrap(), chain::Item { a: 1, b: 2, c: 0 });
    let s = ch.schemas().unwrap();
    assert_eq!(s.iter().filter(|s| s.version == 1).count(), 1);
}

/// The derive's output names primitives by their full paths: types named
/// `u8`, `u32`, `u64` or `str` in the user's scope do not break it. (serde's
/// derives would: only `Message` here.)
mod shadowed_primitives {
    #![allow(non_camel_case_types, dead_code)]
    use super::*;
    struct u8;
    struct u32;
    struct u64;
    struct str;
    #[derive(Message)]
    #[message(name = "t.Shadowed", version = 1)]
    pub struct Old {
        pub x: ::core::primitive::u16,
    }
    #[derive(Message)]
    #[message(name = "t.Shadowed", version = 2, previous = Old)]
    pub struct New {
        pub x: ::core::primitive::u16,
    }
    impl From<Old> for New {
        fn from(o: Old) -> Self {
            New { x: o.x }
        }
    }
}

#[test]
fn the_derive_works_beside_types_named_like_primitives() {
    assert_eq!(<shadowed_primitives::New as Message>::VERSION, 2);
    assert_eq!(<shadowed_primitives::New as Message>::NAME, "t.Shadowed");
}
