//! A serde `Deserializer` wrapper that refuses values nested deeper than
//! [`MAX_DEPTH`](crate::MAX_DEPTH): a recursive type (`enum Expr {
//! Neg(Box<Expr>), .. }`) lets a few bytes per level describe a value deep
//! enough to overflow the decoding thread's stack, which aborts the process.
//! serde_json has a limit of its own; postcard and bincode have none.
//!
//! Every level of nesting (a sequence, map, enum, `Some` or newtype) costs one
//! unit of depth; the wrapper passes itself down through the access objects
//! the inner deserializer hands to visitors.
//!
//! It also counts the elements of every sequence and map against a budget
//! of the body's length plus [`ZERO_SIZED_ELEMENTS`]: an element takes at
//! least a byte, unless its type is zero-sized (`()`, a unit struct), and
//! six bytes declaring 2^40 of those would otherwise keep the decoder busy
//! for hours. Only counts that the bytes declare are counted: the fields of a
//! struct, tuple, array or variant, which postcard and bincode also hand
//! over as a sequence, are as many as the type says, and counting them too
//! would charge a `Vec<(u32, u32)>` three units for two bytes. (So the
//! length a `Deserialize` impl passes to `deserialize_tuple` is trusted:
//! serde's and derived impls pass the type's; a hand-written one that
//! passes a length read from the input is not bounded by the budget.)

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};
use std::cell::Cell;

/// How many elements beyond one per byte of the body a value may hold:
/// room for sequences of zero-sized elements.
pub(crate) const ZERO_SIZED_ELEMENTS: usize = 1 << 16;

/// Elements still allowed.
type Budget = Cell<usize>;

/// The budget for a body of `len` bytes.
pub(crate) fn budget(len: usize) -> Budget {
    Cell::new(len.saturating_add(ZERO_SIZED_ELEMENTS))
}

/// Takes one element from `budget`, or says why not.
fn spend<E: de::Error>(budget: &Budget) -> Result<(), E> {
    match budget.get().checked_sub(1) {
        Some(left) => {
            budget.set(left);
            Ok(())
        }
        None => Err(E::custom("more elements than the body can hold")),
    }
}

/// `inner`, refusing nesting deeper than `depth` more levels.
pub(crate) struct Limited<'b, D> {
    inner: D,
    depth: usize,
    budget: &'b Budget,
}

impl<'b, D> Limited<'b, D> {
    pub(crate) fn new(inner: D, budget: &'b Budget) -> Self {
        Limited {
            inner,
            depth: crate::MAX_DEPTH,
            budget,
        }
    }
}

/// A seed whose value is decoded through [`Limited`] at `depth`.
struct Seed<'b, S> {
    seed: S,
    depth: usize,
    budget: &'b Budget,
}

/// A `T` decoded through [`Limited`] from a body of `len` bytes (for APIs
/// that take a seed).
#[cfg(feature = "bincode")]
pub(crate) struct Top<T> {
    len: usize,
    _t: std::marker::PhantomData<T>,
}

#[cfg(feature = "bincode")]
impl<T> Top<T> {
    pub(crate) fn new(len: usize) -> Self {
        Top {
            len,
            _t: std::marker::PhantomData,
        }
    }
}

#[cfg(feature = "bincode")]
impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for Top<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        let budget = budget(self.len);
        T::deserialize(Limited::new(d, &budget))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Limited {
            inner: d,
            depth: self.depth,
            budget: self.budget,
        })
    }
}

/// `visitor`, walking what it is handed at `depth` with `budget`; the
/// elements of a sequence or map it is handed spend the budget if `counted`
/// (see the module's comment).
fn wrap<V>(visitor: V, depth: usize, budget: &Budget, counted: bool) -> Wrap<'_, V> {
    Wrap {
        visitor,
        depth,
        budget,
        counted,
    }
}

/// The visitor side: one level deeper for whatever it is handed to walk.
struct Wrap<'b, V> {
    visitor: V,
    depth: usize,
    budget: &'b Budget,
    /// Whether a sequence or map handed to it has as many elements as its
    /// bytes say (not as many as a struct's or tuple's type says).
    counted: bool,
}

impl<V> Wrap<'_, V> {
    /// The depth left below this level, or the error if there is none.
    fn below<E: de::Error>(&self) -> Result<usize, E> {
        self.depth
            .checked_sub(1)
            .ok_or_else(|| E::custom(format_args!("nested deeper than {} levels", crate::MAX_DEPTH)))
    }
}

macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(wrap(visitor, self.depth, self.budget, true))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<'_, D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_unit_struct(name, wrap(visitor, self.depth, self.budget, true))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_newtype_struct(name, wrap(visitor, self.depth, self.budget, true))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_tuple(len, wrap(visitor, self.depth, self.budget, false))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_tuple_struct(name, len, wrap(visitor, self.depth, self.budget, false))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_struct(name, fields, wrap(visitor, self.depth, self.budget, false))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_enum(name, variants, wrap(visitor, self.depth, self.budget, true))
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.visitor.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.visitor.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let depth = self.below()?;
        self.visitor.visit_some(Limited {
            inner: d,
            depth,
            budget: self.budget,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        let depth = self.below()?;
        self.visitor.visit_newtype_struct(Limited {
            inner: d,
            depth,
            budget: self.budget,
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let depth = self.below()?;
        self.visitor.visit_seq(Access {
            inner: seq,
            depth,
            budget: self.budget,
            counted: self.counted,
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let depth = self.below()?;
        self.visitor.visit_map(Access {
            inner: map,
            depth,
            budget: self.budget,
            counted: self.counted,
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let depth = self.below()?;
        self.visitor.visit_enum(Access {
            inner: data,
            depth,
            budget: self.budget,
            counted: self.counted,
        })
    }
}

/// A sequence, map, enum or variant access whose elements decode through
/// [`Limited`] at `depth`; sequence and map elements spend the budget if
/// `counted`.
struct Access<'b, A> {
    inner: A,
    depth: usize,
    budget: &'b Budget,
    counted: bool,
}

impl<'b, A> Access<'b, A> {
    fn seed<S>(&self, seed: S) -> Seed<'b, S> {
        Seed {
            seed,
            depth: self.depth,
            budget: self.budget,
        }
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        if self.counted {
            spend(self.budget)?;
        }
        self.inner.next_element_seed(self.seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        if self.counted {
            spend(self.budget)?;
        }
        self.inner.next_key_seed(self.seed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(self.seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'b, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Access<'b, A> {
    type Error = A::Error;
    type Variant = Access<'b, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<(T::Value, Self::Variant), A::Error> {
        let (depth, budget, counted) = (self.depth, self.budget, self.counted);
        let (value, variant) = self.inner.variant_seed(Seed { seed, depth, budget })?;
        Ok((
            value,
            Access {
                inner: variant,
                depth,
                budget,
                counted,
            },
        ))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner
            .tuple_variant(len, wrap(visitor, self.depth, self.budget, false))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner
            .struct_variant(fields, wrap(visitor, self.depth, self.budget, false))
    }
}
