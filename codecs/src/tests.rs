//! Each codec round-trips, reports trailing bytes and garbage as typed
//! errors, and appends without touching what the buffer held.
#![allow(unused_imports, dead_code)]

use super::*;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "rkyv", derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize))]
struct Sample {
    id: u64,
    name: String,
    tags: Vec<u32>,
    wide: u128,
}

fn sample() -> Sample {
    Sample {
        id: 42,
        name: "forty-two".into(),
        tags: vec![1, 2, 3],
        wide: u128::MAX - 7,
    }
}

#[allow(clippy::extra_unused_type_parameters)]
fn round_trip<C: Encode<Sample> + Decode<Sample>>() {
    let mut buf = vec![0xAA; 16];
    C::encode(&sample(), &mut buf).unwrap();
    assert_eq!(&buf[..16], &[0xAA; 16], "{}: the prefix was touched", C::NAME);
    // Decode from an aligned copy (rkyv needs it; the others don't care).
    let body = buf[16..].to_vec();
    assert_eq!(C::decode(&body).unwrap(), sample(), "{}", C::NAME);
    let mut longer = body.clone();
    longer.push(0);
    assert!(C::decode(&longer).is_err(), "{}: trailing byte accepted", C::NAME);
    assert!(
        C::decode(&body[..body.len() / 2]).is_err(),
        "{}: truncated accepted",
        C::NAME
    );
    let err = C::decode(&[]).unwrap_err();
    assert!(matches!(err, CodecError::Decode { codec, .. } if codec == C::NAME));
    assert!(err.to_string().contains("Sample"), "{err}");
}

#[cfg(feature = "postcard")]
#[test]
fn postcard_round_trip() {
    round_trip::<Postcard>();
}

#[cfg(feature = "bincode")]
#[test]
fn bincode_round_trip() {
    round_trip::<Bincode>();
}

#[cfg(feature = "json")]
#[test]
fn json_round_trip() {
    round_trip::<Json>();
}

#[cfg(feature = "json")]
#[test]
fn json_encode_error_leaves_buffer() {
    let mut m = std::collections::BTreeMap::new();
    m.insert(vec![1u8], 1u8); // non-string keys are not JSON
    let mut buf = b"keep".to_vec();
    let err = Json::encode(&m, &mut buf).unwrap_err();
    assert!(matches!(err, CodecError::Encode { codec: "json", .. }));
    assert_eq!(buf, b"keep");
}

#[cfg(feature = "rkyv")]
#[test]
fn rkyv_round_trip_and_access() {
    round_trip::<Rkyv>();
    let mut buf = Vec::new();
    Rkyv::encode(&sample(), &mut buf).unwrap();
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&buf);
    let archived = access::<Sample>(&aligned).unwrap();
    assert_eq!(archived.id, 42);
    assert_eq!(archived.wide, u128::MAX - 7);
    // Misaligned: decode copies, access refuses with a typed error.
    let mut shifted = rkyv::util::AlignedVec::<16>::new();
    shifted.push(0);
    shifted.extend_from_slice(&buf);
    assert_eq!(<Rkyv as Decode<Sample>>::decode(&shifted[1..]).unwrap(), sample());
    assert!(access::<Sample>(&shifted[1..]).is_err());
    // An archive must start at a 16-byte offset of the buffer.
    let mut odd = vec![0u8; 3];
    assert!(Rkyv::encode(&sample(), &mut odd).is_err());
}

/// A length prefix of exabytes is an error, not an allocation failure
/// (found by the `typed_decode` fuzz target).
#[cfg(feature = "bincode")]
#[test]
fn bincode_refuses_huge_length_prefixes() {
    let mut bytes = vec![0xfd]; // varint marker: a u64 follows
    bytes.extend_from_slice(&(u64::MAX / 3).to_le_bytes());
    assert!(<Bincode as Decode<String>>::decode(&bytes).is_err());
    assert!(<Bincode as Decode<Vec<u64>>>::decode(&bytes).is_err());
}

/// A recursive type: one byte per level in postcard and bincode.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "rkyv", derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize))]
#[cfg_attr(feature = "rkyv", rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rkyv::rancor::Source)))]
#[cfg_attr(feature = "rkyv", rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source)))]
#[cfg_attr(feature = "rkyv", rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rkyv::rancor::Source))))]
enum Expr {
    Lit(u8),
    Neg(#[cfg_attr(feature = "rkyv", rkyv(omit_bounds))] Box<Expr>),
}

fn nested(levels: usize) -> Expr {
    (0..levels).fold(Expr::Lit(7), |e, _| Expr::Neg(Box::new(e)))
}

/// Frees a deep value without recursing (`Drop` of a long `Box` chain
/// would).
fn unnest(mut e: Expr) {
    while let Expr::Neg(inner) = e {
        e = *inner;
    }
}

/// A value nested deeper than `MAX_DEPTH` is a decode error, never a stack
/// overflow (which aborts the process): 2,000,000 levels in 2 MB of
/// postcard or bincode (`Neg` is variant 1, `Lit(0)` is `0 0`). Nesting up
/// to the limit decodes.
type DecodeFn = fn(&[u8]) -> Result<Expr, CodecError>;

#[cfg(any(feature = "postcard", feature = "bincode"))]
#[test]
fn values_nested_deeper_than_the_limit_are_errors() {
    let mut deep = vec![1u8; 2_000_000];
    deep.extend_from_slice(&[0, 0]);
    #[allow(unused_mut)]
    let mut decoders: Vec<(&str, DecodeFn)> = Vec::new();
    #[cfg(feature = "postcard")]
    decoders.push(("postcard", <Postcard as Decode<Expr>>::decode));
    #[cfg(feature = "bincode")]
    decoders.push(("bincode", <Bincode as Decode<Expr>>::decode));
    for (name, decode) in decoders {
        // (postcard reports a serde error without its message.)
        assert!(decode(&deep).is_err(), "{name}: 2,000,000 levels accepted");
        // The deepest that passes: an enum level per `Neg`, and `Lit`'s.
        let mut ok = vec![1u8; MAX_DEPTH - 1];
        ok.extend_from_slice(&[0, 7]);
        unnest(decode(&ok).unwrap_or_else(|e| panic!("{name}: {e}")));
        let mut over = vec![1u8; MAX_DEPTH];
        over.extend_from_slice(&[0, 7]);
        assert!(decode(&over).is_err(), "{name}: {} levels accepted", MAX_DEPTH + 1);
    }
}

#[cfg(feature = "rkyv")]
#[test]
fn rkyv_archives_nested_deeper_than_the_limit_are_errors() {
    let encode = |levels| {
        let value = nested(levels);
        let mut buf = Vec::new();
        Rkyv::encode(&value, &mut buf).unwrap();
        unnest(value);
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&buf);
        aligned
    };
    let deep = encode(MAX_DEPTH + 10);
    assert!(access::<Expr>(&deep).is_err(), "{} levels accepted", MAX_DEPTH + 10);
    assert!(<Rkyv as Decode<Expr>>::decode(&deep).is_err());
    let shallow = encode(MAX_DEPTH - 10);
    assert!(access::<Expr>(&shallow).is_ok());
    unnest(<Rkyv as Decode<Expr>>::decode(&shallow).unwrap());
}

/// A body declaring 2^40 zero-sized elements (six bytes) is refused at
/// once instead of decoding each of them (hours); sequences of real
/// elements are not limited by the budget, nor short zero-sized ones.
#[cfg(any(feature = "postcard", feature = "bincode"))]
#[test]
fn a_huge_count_of_zero_sized_elements_is_refused_at_once() {
    let n: u64 = 1 << 40;
    #[allow(unused_mut)]
    type DecodeUnits = fn(&[u8]) -> Result<Vec<()>, CodecError>;
    let mut cases: Vec<(&str, Vec<u8>, DecodeUnits)> = Vec::new();
    #[cfg(feature = "postcard")]
    {
        let mut varint = Vec::new();
        let mut v = n;
        while v >= 0x80 {
            varint.push(v as u8 | 0x80);
            v >>= 7;
        }
        varint.push(v as u8);
        cases.push(("postcard", varint, <Postcard as Decode<Vec<()>>>::decode));
    }
    #[cfg(feature = "bincode")]
    {
        // bincode's varint: 253, then the u64 little-endian.
        let mut varint = vec![253u8];
        varint.extend_from_slice(&n.to_le_bytes());
        cases.push(("bincode", varint, <Bincode as Decode<Vec<()>>>::decode));
    }
    for (name, body, decode) in cases {
        let started = std::time::Instant::now();
        assert!(decode(&body).is_err(), "{name}: 2^40 unit elements accepted");
        // Generous for a debug build on a busy machine; the unbounded loop
        // takes hours.
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{name}");
    }
    #[cfg(feature = "postcard")]
    {
        let mut buf = Vec::new();
        Postcard::encode(&vec![(); 1000], &mut buf).unwrap();
        assert_eq!(<Postcard as Decode<Vec<()>>>::decode(&buf).unwrap().len(), 1000);
        let bytes = vec![7u8; 1 << 20];
        buf.clear();
        Postcard::encode(&bytes, &mut buf).unwrap();
        assert_eq!(<Postcard as Decode<Vec<u8>>>::decode(&buf).unwrap(), bytes);
    }
}

/// The budget counts the elements a body declares, not the fields of the
/// structs, tuples and arrays in them (postcard and bincode hand those over
/// as sequences too): a long `Vec<(u32, u32)>` of small values takes two
/// bytes an element, and was refused as "more elements than the body can
/// hold" when each tuple cost three units (from a read-only review).
#[cfg(any(feature = "postcard", feature = "bincode"))]
#[test]
fn long_sequences_of_tuples_arrays_and_structs_decode() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Pair {
        a: u8,
        b: u8,
    }
    fn check<C, T>(v: &T)
    where
        C: Encode<T> + Decode<T>,
        T: PartialEq + std::fmt::Debug,
    {
        let mut buf = Vec::new();
        C::encode(v, &mut buf).unwrap();
        assert_eq!(&C::decode(&buf).unwrap(), v);
    }
    let pairs = vec![(1u32, 2u32); 100_000];
    let hashes = vec![[7u8; 32]; 100_000];
    let structs: Vec<Pair> = (0..100_000).map(|i| Pair { a: i as u8, b: 1 }).collect();
    #[cfg(feature = "postcard")]
    {
        check::<Postcard, _>(&pairs);
        check::<Postcard, _>(&hashes);
        check::<Postcard, _>(&structs);
    }
    #[cfg(feature = "bincode")]
    {
        check::<Bincode, _>(&pairs);
        check::<Bincode, _>(&hashes);
        check::<Bincode, _>(&structs);
    }
}

/// NaN and the infinities are encode errors wherever they sit, and the
/// buffer keeps what it held: serde_json would write `null` for them, and
/// `Some(f64::NAN)` came back as `None` (from a read-only review). Finite
/// values, the largest and negative zero included, are written exactly as
/// serde_json writes them.
#[cfg(feature = "json")]
#[test]
fn json_refuses_non_finite_floats_anywhere() {
    #[derive(serde::Serialize)]
    enum E {
        N(f64),
        T(u8, f32),
        S { x: f64 },
    }
    #[derive(serde::Serialize)]
    struct W(f64);
    fn refused<T: serde::Serialize>(what: &str, v: &T) {
        let mut buf = b"keep".to_vec();
        match Json::encode(v, &mut buf) {
            Err(CodecError::Encode {
                codec: "json", source, ..
            }) => {
                assert!(source.to_string().contains("is not a JSON number"), "{what}: {source}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(buf, b"keep", "{what}");
    }
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        refused("f64", &bad);
        refused("f32", &(bad as f32));
        refused("Some", &Some(bad));
        refused("Vec", &vec![1.0, bad]);
        refused("tuple", &(1u8, bad));
        refused("newtype", &W(bad));
        refused("newtype variant", &E::N(bad));
        refused("tuple variant", &E::T(1, bad as f32));
        refused("struct variant", &E::S { x: bad });
        refused("map value", &std::collections::BTreeMap::from([("k", bad)]));
        refused("nested", &Some(vec![Some((String::new(), vec![bad]))]));
    }
    let fine = (
        vec![0.0, -0.0, f64::MAX, f64::MIN_POSITIVE, 1.5],
        Some(f32::MAX),
        std::collections::BTreeMap::from([(1u32, vec![E::S { x: 2.5 }, E::N(-1.0), E::T(3, 0.25)])]),
        W(7.0),
    );
    let mut buf = Vec::new();
    Json::encode(&fine, &mut buf).unwrap();
    assert_eq!(buf, serde_json::to_vec(&fine).unwrap());
}
