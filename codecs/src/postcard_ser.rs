//! A serde serializer that writes postcard's wire format straight into a
//! `Vec<u8>`, faster than postcard's own `io::Write` flavor.
//!
//! Why it exists: the typed send path encodes every message, and postcard's
//! serializer builds each varint byte by byte in a stack buffer and then
//! copies it out, so the copy's load waits on the byte stores (a
//! store-forwarding stall per integer). Here a varint is built in a register
//! (the 7-bit groups spread into bytes in three halving steps) and appended
//! as one 8-byte store, then the length is trimmed back; a sequence's items
//! are written in a loop that holds the vector's address in a register (see
//! `items_into`). Everything else follows postcard 1.x's serializer rule for
//! rule, with one exception: a `Display` given to `collect_str` whose second
//! formatting differs in length from the first is an error here, where
//! postcard writes a wrong length. The module's tests check byte equality
//! with `postcard::to_allocvec` over every serde data-model type, and
//! decoding stays postcard's own.
//!
//! The format (postcard 1.x, <https://postcard.jamesmunns.com/wire-format>):
//! `u8`/`i8`/`bool` one byte; other integers LEB128 varints (signed ones
//! zigzagged first); floats little-endian; strings, byte strings, sequences
//! and maps a varint length then the items; `Option` a 0/1 byte then the
//! value; enum variants a varint index then the fields; structs and tuples
//! their fields in order, with nothing around them.

use postcard::Error;
use serde::ser::{self, Serialize};

/// Appends postcard's encoding of values to a `Vec<u8>`.
pub(crate) struct Serializer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Serializer<'a> {
    /// Appends after what `out` holds.
    #[inline]
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Serializer { out }
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.out.push(b);
    }

    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    /// Appends the first `n` of `word`'s little-endian bytes.
    #[inline(always)]
    fn word(&mut self, word: u64, n: usize) {
        self.out.extend_from_slice(&word.to_le_bytes());
        let len = self.out.len();
        self.out.truncate(len - (8 - n));
    }

    /// Appends `v` as a LEB128 varint.
    #[inline(always)]
    fn varint(&mut self, v: u64) {
        if v < 0x80 {
            self.byte(v as u8);
            return;
        }
        if v < 1 << 56 {
            // 2..=8 bytes: the last is the one holding `v`'s highest set
            // bit, and every byte below it gets its continuation bit.
            let last = last_group(63 - v.leading_zeros()) & 7;
            self.word(spread(v) | MORE[last], last + 1);
        } else {
            // Nine or ten bytes: eight full groups, then the top 8 bits.
            self.word(spread(v) | CONTINUE, 8);
            let top = v >> 56;
            if top < 0x80 {
                self.byte(top as u8);
            } else {
                self.byte(top as u8 | 0x80);
                self.byte((top >> 7) as u8);
            }
        }
    }

    /// Appends `v` as a LEB128 varint, a byte at a time (values of 2^64 and
    /// up, which only `u128`/`i128` reach).
    #[cold]
    fn varint_slow(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.byte((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline]
    fn varint_u128(&mut self, v: u128) {
        match u64::try_from(v) {
            Ok(small) => self.varint(small),
            Err(_) => self.varint_slow(v),
        }
    }

    #[inline]
    fn len_prefix(&mut self, len: usize) {
        // usize is at most 64 bits on every target Rust supports.
        self.varint(len as u64);
    }
}

/// Appends the encodings of `iter`'s items to `out`: serde's
/// `collect_seq` loop, in a function of its own so that `out` is one of its
/// parameters and the vector's address stays in a register. In serde's
/// default loop the serializer is reached through `&mut &mut Serializer`,
/// and the compiler reloads the serializer's reference to the vector after
/// every byte store (the store might have changed it), a dependent load in
/// front of every item (`Encode_Large`: ~207 -> 157-180 ns).
#[inline(never)]
fn items_into<I>(out: &mut Vec<u8>, iter: I) -> Result<(), Error>
where
    I: Iterator,
    I::Item: Serialize,
{
    // A serializer of its own over the same vector: `Serializer` holds
    // nothing but the vector, so no state is left behind in the caller's
    // (one that gains state must hand it over here).
    let mut ser = Serializer::new(out);
    for item in iter {
        item.serialize(&mut ser)?;
    }
    Ok(())
}

/// Continuation bits, one per byte.
const CONTINUE: u64 = 0x8080_8080_8080_8080;

/// `MORE[k]`: the continuation bits of a varint whose last byte is byte
/// `k` (one on each byte below it). A table, because a shift by a variable
/// count costs three micro-ops on x86 without BMI2.
const MORE: [u64; 8] = {
    let mut t = [0u64; 8];
    let mut k = 1;
    while k < 8 {
        t[k] = CONTINUE & ((1u64 << (8 * k)) - 1);
        k += 1;
    }
    t
};

/// The low 56 bits of `v` in seven-bit groups, group i in byte i (its top
/// bit clear). Three halving steps, each moving the upper half of every lane
/// up (56 bits into two 28-bit lanes 32 apart, those into 14-bit lanes 16
/// apart, those into 7-bit lanes 8 apart): `x + (2^k - 1) * (x & upper)` is
/// `lower | upper << k`. About a dozen instructions where a shift, mask and
/// or per group take 24; for a `u32` the compiler drops what is always zero.
#[inline(always)]
fn spread(v: u64) -> u64 {
    let x = v & ((1 << 56) - 1);
    let x = x + 15 * (x & 0x00FF_FFFF_F000_0000);
    let x = x + 3 * (x & 0x0FFF_C000_0FFF_C000);
    x + (x & 0x3F80_3F80_3F80_3F80)
}

/// The index of the seven-bit group holding bit `bit` (0..=63): `bit / 7`,
/// as a multiply and a shift (exact over that range).
#[inline(always)]
fn last_group(bit: u32) -> usize {
    ((bit * 37) >> 8) as usize
}

/// Serializer methods that append the encoding of one primitive and cannot
/// fail: `name(type) => |serializer, value| append;`.
macro_rules! appends {
    ($($method:ident($ty:ty) => |$s:ident, $v:ident| $append:expr;)*) => {
        $(
            #[inline]
            fn $method(self, $v: $ty) -> Result<(), Error> {
                let $s = self;
                $append;
                Ok(())
            }
        )*
    };
}

impl<'a> ser::Serializer for &mut Serializer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    #[inline]
    fn is_human_readable(&self) -> bool {
        false
    }

    // Signed integers are zigzagged (the sign moves to the lowest bit) before
    // their varint, as in postcard.
    appends! {
        serialize_bool(bool) => |s, v| s.byte(u8::from(v));
        serialize_i8(i8) => |s, v| s.byte(v as u8);
        serialize_i16(i16) => |s, v| s.varint(u64::from(((v << 1) ^ (v >> 15)) as u16));
        serialize_i32(i32) => |s, v| s.varint(u64::from(((v << 1) ^ (v >> 31)) as u32));
        serialize_i64(i64) => |s, v| s.varint(((v << 1) ^ (v >> 63)) as u64);
        serialize_i128(i128) => |s, v| s.varint_u128(((v << 1) ^ (v >> 127)) as u128);
        serialize_u8(u8) => |s, v| s.byte(v);
        serialize_u16(u16) => |s, v| s.varint(u64::from(v));
        serialize_u32(u32) => |s, v| s.varint(u64::from(v));
        serialize_u64(u64) => |s, v| s.varint(v);
        serialize_u128(u128) => |s, v| s.varint_u128(v);
        serialize_f32(f32) => |s, v| s.bytes(&v.to_bits().to_le_bytes());
        serialize_f64(f64) => |s, v| s.bytes(&v.to_bits().to_le_bytes());
    }

    #[inline]
    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.serialize_str(v.encode_utf8(&mut [0u8; 4]))
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.serialize_bytes(v.as_bytes())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.len_prefix(v.len());
        self.bytes(v);
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Result<(), Error> {
        self.byte(0);
        Ok(())
    }

    #[inline]
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
        self.byte(1);
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_variant(self, _name: &'static str, index: u32, _variant: &'static str) -> Result<(), Error> {
        self.varint(u64::from(index));
        Ok(())
    }

    #[inline]
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _name: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.varint(u64::from(index));
        value.serialize(self)
    }

    #[inline]
    fn collect_seq<I>(self, iter: I) -> Result<(), Error>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        // serde's default: the length when the iterator knows it exactly.
        let iter = iter.into_iter();
        let len = match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            _ => None,
        };
        let seq = ser::Serializer::serialize_seq(self, len)?;
        items_into(seq.out, iter)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Error> {
        self.len_prefix(len.ok_or(Error::SerializeSeqLengthUnknown)?);
        Ok(self)
    }

    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, Error> {
        self.varint(u64::from(index));
        Ok(self)
    }

    /// Starts like a sequence: the number of entries, known up front.
    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self, Error> {
        ser::Serializer::serialize_seq(self, len)
    }

    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    /// Starts like a tuple variant: the variant's index, then the fields.
    #[inline]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Error> {
        ser::Serializer::serialize_tuple_variant(self, name, index, variant, len)
    }

    /// Formats `value` once to learn its length (postcard writes the length
    /// first) and once into the buffer, as postcard does; unlike postcard,
    /// refuses a `Display` whose two outputs differ in length.
    fn collect_str<T: ?Sized + std::fmt::Display>(self, value: &T) -> Result<(), Error> {
        use std::fmt::Write;

        struct Count(usize);
        impl Write for Count {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0 += s.len();
                Ok(())
            }
        }
        struct Append<'b, 'a>(&'b mut Serializer<'a>);
        impl Write for Append<'_, '_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.bytes(s.as_bytes());
                Ok(())
            }
        }

        let mut count = Count(0);
        write!(count, "{value}").map_err(|_| Error::CollectStrError)?;
        self.len_prefix(count.0);
        let start = self.out.len();
        write!(Append(self), "{value}").map_err(|_| Error::CollectStrError)?;
        // A `Display` that writes a different length the second time would
        // leave a wrong length in front of the text: refuse it rather than
        // emit it.
        if self.out.len() - start != count.0 {
            return Err(Error::CollectStrError);
        }
        Ok(())
    }
}

/// Implements a compound-serializer trait whose items are written back to
/// back with nothing around them (postcard wrote any prefix already).
macro_rules! back_to_back {
    ($trait:ident, $method:ident $(, $key:ty)?) => {
        impl<'a> ser::$trait for &mut Serializer<'a> {
            type Ok = ();
            type Error = Error;

            #[inline]
            fn $method<T: ?Sized + Serialize>(&mut self, $(_key: $key,)? value: &T) -> Result<(), Error> {
                value.serialize(&mut **self)
            }

            #[inline]
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
    };
}

back_to_back!(SerializeSeq, serialize_element);
back_to_back!(SerializeTuple, serialize_element);
back_to_back!(SerializeTupleStruct, serialize_field);
back_to_back!(SerializeTupleVariant, serialize_field);
back_to_back!(SerializeStruct, serialize_field, &'static str);
back_to_back!(SerializeStructVariant, serialize_field, &'static str);

impl<'a> ser::SerializeMap for &mut Serializer<'a> {
    type Ok = ();
    type Error = Error;

    #[inline]
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        key.serialize(&mut **self)
    }

    #[inline]
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut **self)
    }

    #[inline]
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Byte equality with `postcard::to_allocvec` over a generated tree that
    //! calls every method of the serde data model directly.

    use super::*;
    use proptest::prelude::*;
    use serde::ser::{
        SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple, SerializeTupleStruct,
        SerializeTupleVariant,
    };

    /// One value of the serde data model, serialized through the method of
    /// the same name.
    #[derive(Debug, Clone)]
    enum Node {
        Bool(bool),
        I8(i8),
        I16(i16),
        I32(i32),
        I64(i64),
        I128(i128),
        U8(u8),
        U16(u16),
        U32(u32),
        U64(u64),
        U128(u128),
        F32(f32),
        F64(f64),
        Char(char),
        Str(String),
        Bytes(Vec<u8>),
        None,
        Some(Box<Node>),
        Unit,
        UnitStruct,
        UnitVariant(u32),
        NewtypeStruct(Box<Node>),
        NewtypeVariant(u32, Box<Node>),
        Seq(Vec<Node>),
        Tuple(Vec<Node>),
        TupleStruct(Vec<Node>),
        TupleVariant(u32, Vec<Node>),
        Map(Vec<(Node, Node)>),
        Struct(Vec<Node>),
        StructVariant(u32, Vec<Node>),
        /// Through `collect_str`.
        Display(i64),
        /// A sequence whose length is not given up front: an error.
        SeqUnsized(Vec<Node>),
        /// A map whose length is not given up front: an error.
        MapUnsized(Vec<(Node, Node)>),
        /// Through `collect_seq`, as `Vec` and slices serialize.
        Collected(Vec<Node>),
        /// Through `collect_seq` with an iterator whose length is only
        /// bounded (`filter`): an error unless it is empty.
        CollectedUnsized(Vec<Node>),
    }

    impl Serialize for Node {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Node::Bool(v) => s.serialize_bool(*v),
                Node::I8(v) => s.serialize_i8(*v),
                Node::I16(v) => s.serialize_i16(*v),
                Node::I32(v) => s.serialize_i32(*v),
                Node::I64(v) => s.serialize_i64(*v),
                Node::I128(v) => s.serialize_i128(*v),
                Node::U8(v) => s.serialize_u8(*v),
                Node::U16(v) => s.serialize_u16(*v),
                Node::U32(v) => s.serialize_u32(*v),
                Node::U64(v) => s.serialize_u64(*v),
                Node::U128(v) => s.serialize_u128(*v),
                Node::F32(v) => s.serialize_f32(*v),
                Node::F64(v) => s.serialize_f64(*v),
                Node::Char(v) => s.serialize_char(*v),
                Node::Str(v) => s.serialize_str(v),
                Node::Bytes(v) => s.serialize_bytes(v),
                Node::None => s.serialize_none(),
                Node::Some(v) => s.serialize_some(v),
                Node::Unit => s.serialize_unit(),
                Node::UnitStruct => s.serialize_unit_struct("U"),
                Node::UnitVariant(i) => s.serialize_unit_variant("E", *i, "V"),
                Node::NewtypeStruct(v) => s.serialize_newtype_struct("N", v),
                Node::NewtypeVariant(i, v) => s.serialize_newtype_variant("E", *i, "V", v),
                Node::Seq(items) => {
                    let mut seq = s.serialize_seq(Some(items.len()))?;
                    items.iter().try_for_each(|v| seq.serialize_element(v))?;
                    seq.end()
                }
                Node::Collected(items) => s.collect_seq(items),
                Node::CollectedUnsized(items) => s.collect_seq(items.iter().filter(|_| true)),
                Node::SeqUnsized(items) => {
                    let mut seq = s.serialize_seq(None)?;
                    items.iter().try_for_each(|v| seq.serialize_element(v))?;
                    seq.end()
                }
                Node::Tuple(items) => {
                    let mut t = s.serialize_tuple(items.len())?;
                    items.iter().try_for_each(|v| t.serialize_element(v))?;
                    t.end()
                }
                Node::TupleStruct(items) => {
                    let mut t = s.serialize_tuple_struct("T", items.len())?;
                    items.iter().try_for_each(|v| t.serialize_field(v))?;
                    t.end()
                }
                Node::TupleVariant(i, items) => {
                    let mut t = s.serialize_tuple_variant("E", *i, "V", items.len())?;
                    items.iter().try_for_each(|v| t.serialize_field(v))?;
                    t.end()
                }
                Node::Map(entries) => {
                    let mut m = s.serialize_map(Some(entries.len()))?;
                    entries.iter().try_for_each(|(k, v)| m.serialize_entry(k, v))?;
                    m.end()
                }
                Node::MapUnsized(entries) => {
                    let mut m = s.serialize_map(None)?;
                    entries.iter().try_for_each(|(k, v)| m.serialize_entry(k, v))?;
                    m.end()
                }
                Node::Struct(fields) => {
                    let mut st = s.serialize_struct("S", fields.len())?;
                    fields.iter().try_for_each(|v| st.serialize_field("f", v))?;
                    st.end()
                }
                Node::StructVariant(i, fields) => {
                    let mut st = s.serialize_struct_variant("E", *i, "V", fields.len())?;
                    fields.iter().try_for_each(|v| st.serialize_field("f", v))?;
                    st.end()
                }
                Node::Display(v) => s.collect_str(v),
            }
        }
    }

    /// Integers near every varint byte boundary, and anywhere.
    fn wide() -> impl Strategy<Value = u128> {
        prop_oneof![
            any::<u128>(),
            any::<u64>().prop_map(u128::from),
            any::<u16>().prop_map(u128::from),
            (0u32..128).prop_map(|k| 1u128 << k),
            (1u32..128).prop_map(|k| (1u128 << k) - 1),
            (0u32..128).prop_map(|k| u128::MAX << k),
        ]
    }

    fn leaf() -> impl Strategy<Value = Node> {
        prop_oneof![
            any::<bool>().prop_map(Node::Bool),
            wide().prop_map(|v| Node::I8(v as i8)),
            wide().prop_map(|v| Node::I16(v as i16)),
            wide().prop_map(|v| Node::I32(v as i32)),
            wide().prop_map(|v| Node::I64(v as i64)),
            wide().prop_map(|v| Node::I128(v as i128)),
            wide().prop_map(|v| Node::U8(v as u8)),
            wide().prop_map(|v| Node::U16(v as u16)),
            wide().prop_map(|v| Node::U32(v as u32)),
            wide().prop_map(|v| Node::U64(v as u64)),
            wide().prop_map(Node::U128),
            any::<u32>().prop_map(|b| Node::F32(f32::from_bits(b))),
            any::<u64>().prop_map(|b| Node::F64(f64::from_bits(b))),
            any::<char>().prop_map(Node::Char),
            ".{0,200}".prop_map(Node::Str),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Node::Bytes),
            Just(Node::None),
            Just(Node::Unit),
            Just(Node::UnitStruct),
            wide().prop_map(|i| Node::UnitVariant(i as u32)),
            any::<i64>().prop_map(Node::Display),
        ]
    }

    fn node() -> impl Strategy<Value = Node> {
        leaf().prop_recursive(4, 64, 8, |inner| {
            let items = proptest::collection::vec(inner.clone(), 0..8);
            prop_oneof![
                inner.clone().prop_map(|v| Node::Some(Box::new(v))),
                inner.clone().prop_map(|v| Node::NewtypeStruct(Box::new(v))),
                (wide(), inner.clone()).prop_map(|(i, v)| Node::NewtypeVariant(i as u32, Box::new(v))),
                items.clone().prop_map(Node::Seq),
                items.clone().prop_map(Node::Tuple),
                items.clone().prop_map(Node::TupleStruct),
                (wide(), items.clone()).prop_map(|(i, v)| Node::TupleVariant(i as u32, v)),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..6).prop_map(Node::Map),
                items.clone().prop_map(Node::Struct),
                (wide(), items.clone()).prop_map(|(i, v)| Node::StructVariant(i as u32, v)),
                items.clone().prop_map(Node::Collected),
                items.clone().prop_map(Node::CollectedUnsized),
                items.prop_map(Node::SeqUnsized),
                proptest::collection::vec((inner.clone(), inner), 0..3).prop_map(Node::MapUnsized),
            ]
        })
    }

    fn ours(value: &Node) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        value.serialize(&mut Serializer::new(&mut out))?;
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn writes_the_bytes_postcard_writes(value in node()) {
            match (ours(&value), postcard::to_allocvec(&value)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "ours {:?}, postcard {:?}", a, b),
            }
        }
    }

    /// The two arithmetic shortcuts against their plain definitions:
    /// `last_group` is `/ 7` over its whole domain, and `spread` is a shift,
    /// mask and or per group for values with every group pattern.
    #[test]
    fn group_arithmetic_matches_its_definition() {
        for bit in 0..64 {
            assert_eq!(last_group(bit), (bit / 7) as usize, "bit {bit}");
        }
        let plain = |v: u64| (0..8).fold(0u64, |out, i| out | ((v >> (7 * i)) & 0x7f) << (8 * i));
        let mut v = 0x9E37_79B9_7F4A_7C15u64;
        for k in 0..64 {
            for probe in [v, 1 << k, (1 << k) - 1, !0 >> k, !0 << k] {
                assert_eq!(spread(probe), plain(probe), "{probe:#x}");
            }
            v = v.rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        }
    }

    /// Every integer width at every varint byte boundary (and one either
    /// side), signed ones on both sides of zero.
    #[test]
    fn varints_at_every_byte_boundary_match_postcard() {
        fn same<T: Serialize + std::fmt::Debug>(node: Node, v: T) {
            assert_eq!(ours(&node).unwrap(), postcard::to_allocvec(&v).unwrap(), "{v:?}");
        }
        for k in 0..128u32 {
            for v in [1u128 << k, (1u128 << k) - 1, (1u128 << k).wrapping_add(1)] {
                same(Node::U128(v), v);
                same(Node::I128(v as i128), v as i128);
                same(Node::I128((v as i128).wrapping_neg()), (v as i128).wrapping_neg());
                same(Node::U64(v as u64), v as u64);
                same(Node::I64(v as i64), v as i64);
                same(Node::I64((v as i64).wrapping_neg()), (v as i64).wrapping_neg());
                same(Node::U32(v as u32), v as u32);
                same(Node::I32(v as i32), v as i32);
                same(Node::I32((v as i32).wrapping_neg()), (v as i32).wrapping_neg());
                same(Node::U16(v as u16), v as u16);
                same(Node::I16(v as i16), v as i16);
                same(Node::I16((v as i16).wrapping_neg()), (v as i16).wrapping_neg());
            }
        }
    }

    /// A `Display` that writes more the second time it is formatted.
    struct Growing(std::cell::Cell<usize>);

    impl std::fmt::Display for Growing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.set(self.0.get() + 1);
            write!(f, "{}", "x".repeat(self.0.get()))
        }
    }

    impl Serialize for Growing {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self)
        }
    }

    #[test]
    fn a_display_that_changes_between_passes_is_refused() {
        let mut out = Vec::new();
        let r = Growing(std::cell::Cell::new(0)).serialize(&mut Serializer::new(&mut out));
        assert_eq!(r, Err(Error::CollectStrError));
    }

    #[test]
    fn an_unsized_sequence_is_the_error_postcard_gives_and_leaves_the_buffer_alone() {
        let value = Node::Seq(vec![Node::SeqUnsized(vec![Node::U8(1)])]);
        assert_eq!(ours(&value), Err(Error::SerializeSeqLengthUnknown));
        let map = Node::MapUnsized(vec![(Node::U8(1), Node::Unit)]);
        assert_eq!(ours(&map), Err(Error::SerializeSeqLengthUnknown));
        // Through the codec: a typed error, and the buffer as it was.
        let mut buf = vec![9u8; 3];
        let err = <crate::Postcard as crate::Encode<Node>>::encode(&value, &mut buf).unwrap_err();
        assert!(
            matches!(err, crate::CodecError::Encode { codec: "postcard", .. }),
            "{err}"
        );
        assert_eq!(buf, [9, 9, 9]);
    }
}
