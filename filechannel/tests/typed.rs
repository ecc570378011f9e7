//! Typed channels: every codec round-trips a realistic struct, across a
//! reopen and across compressed segments; mismatched types, versions and
//! codecs are typed errors that leave the receiver usable; rkyv archives are
//! read in place, aligned, from the memory map.

mod common;
use common::wait_for;
use filechannel::codec::{Codec, CodecError, Decode, Encode, Postcard};
use filechannel::{Compression, DecodeError, FileChannel, Message, RecvError, SendError, TryRecvError};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(
    Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq,
)]
#[message(name = "test.Order", version = 1)]
struct Order {
    id: u64,
    customer: String,
    lines: Vec<Line>,
    note: Option<String>,
    status: Status,
    attrs: BTreeMap<String, u32>,
    wide: u128,
}

// Nested types derive `Message` too: that gives them a shape fingerprint,
// so a change inside them is caught by the schema registry.
#[derive(
    Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq,
)]
struct Line {
    sku: String,
    qty: u32,
    price_cents: i64,
}

#[derive(
    Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq,
)]
enum Status {
    New,
    Paid { at: u64 },
    Shipped(String),
}

fn order(i: u64) -> Order {
    Order {
        id: i,
        customer: format!("customer-{}", i % 97),
        lines: (0..i % 4)
            .map(|l| Line {
                sku: format!("sku-{l}-{i}"),
                qty: (l as u32 + 1) * 3,
                price_cents: -(i as i64) * 7 + l as i64,
            })
            .collect(),
        note: i.is_multiple_of(3).then(|| "leave at the door".to_string()),
        status: match i % 3 {
            0 => Status::New,
            1 => Status::Paid { at: 1_700_000_000 + i },
            _ => Status::Shipped(format!("track-{i}")),
        },
        attrs: (0..i % 3).map(|k| (format!("k{k}"), k as u32 * 11)).collect(),
        wide: u128::from(i) << 64 | 0xdead_beef,
    }
}

fn open(dir: &Path, compression: Compression) -> FileChannel {
    FileChannel::builder()
        .segment_size(16 << 10)
        .compression(compression)
        .open(dir)
        .unwrap()
}

/// Sends 600 orders, reopens, waits until some segments are compressed,
/// and reads them all back in order, through the typed receiver.
fn round_trip<C>()
where
    C: Encode<Order> + Decode<Order>,
{
    let dir = tempfile::tempdir().unwrap();
    const N: u64 = 600;
    {
        let ch = open(dir.path(), Compression::Zstd);
        let tx = ch.typed_tx::<Order, C>().unwrap();
        for i in 0..N {
            tx.send(&order(i)).unwrap();
        }
        ch.close().unwrap();
    }
    let ch = open(dir.path(), Compression::Zstd);
    // Send a few more after the reopen so that earlier segments are sealed.
    let tx = ch.typed_tx::<Order, C>().unwrap();
    for i in N..N + 100 {
        tx.send(&order(i)).unwrap();
    }
    wait_for("compressed segments", || ch.stats().compressed_segments >= 2);
    let mut rx = ch.typed_rx::<Order, C>().unwrap();
    for i in 0..N + 100 {
        assert_eq!(rx.try_recv().unwrap(), order(i), "{} message {i}", C::NAME);
    }
    assert!(rx.try_recv().unwrap_err().is_empty());
}

#[test]
fn postcard_round_trip() {
    round_trip::<Postcard>();
}

#[cfg(feature = "bincode")]
#[test]
fn bincode_round_trip() {
    round_trip::<filechannel::codec::Bincode>();
}

#[cfg(feature = "json")]
#[test]
fn json_round_trip() {
    round_trip::<filechannel::codec::Json>();
}

#[cfg(feature = "rkyv")]
#[test]
fn rkyv_round_trip() {
    round_trip::<filechannel::codec::Rkyv>();
}

/// The same frames read in place with `recv_ref`, from plain and from
/// compressed segments alike.
#[cfg(feature = "rkyv")]
#[test]
fn rkyv_recv_ref_plain_and_compressed() {
    use filechannel::codec::Rkyv;
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::Snappy);
    let tx = ch.typed_tx::<Order, Rkyv>().unwrap();
    for i in 0..400 {
        tx.send(&order(i)).unwrap();
    }
    wait_for("compressed segments", || ch.stats().compressed_segments >= 2);
    let mut rx = ch.typed_rx::<Order, Rkyv>().unwrap();
    for i in 0..400 {
        let a = rx.recv_ref().unwrap();
        assert_eq!(a.offset(), i);
        assert_eq!(a.id, i);
        let back: Order = rkyv::deserialize::<Order, rkyv::rancor::Error>(&*a).unwrap();
        assert_eq!(back, order(i));
    }
}

/// `recv_ref` does not copy: the archive lies inside the receiver's
/// mapping, and that mapping is the segment file (per /proc/self/maps).
#[cfg(feature = "rkyv")]
#[test]
fn rkyv_recv_ref_points_into_the_segment_mapping() {
    use filechannel::codec::Rkyv;
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    ch.typed_tx::<Order, Rkyv>().unwrap().send(&order(5)).unwrap();
    let mut rx = ch.typed_rx::<Order, Rkyv>().unwrap();
    let a = rx.recv_ref().unwrap();
    let addr = std::ptr::from_ref(&*a).addr();
    assert_eq!(a.customer.as_str(), "customer-5");
    let range = rx.get_ref().mapped_range();
    assert!(range.contains(&addr), "{addr:#x} not in {range:x?}");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let line = maps
        .lines()
        .find(|l| {
            let (lo, hi) = l.split_once(' ').unwrap().0.split_once('-').unwrap();
            let (lo, hi) = (
                usize::from_str_radix(lo, 16).unwrap(),
                usize::from_str_radix(hi, 16).unwrap(),
            );
            (lo..hi).contains(&addr)
        })
        .expect("address in no mapping");
    assert!(line.contains("segment.0000"), "not a segment mapping: {line}");
    assert!(line.contains(dir.path().to_str().unwrap()), "{line}");
}

/// Raw payloads of every length 0..64, each followed by a u128-bearing
/// typed frame: every archive is 16-byte aligned and validates. The raw
/// frames are typed errors for the typed receiver, which moves past them.
#[cfg(feature = "rkyv")]
#[test]
fn rkyv_archives_are_aligned_after_any_payload_length() {
    use filechannel::codec::Rkyv;
    #[derive(Message, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    #[rkyv(derive(Debug))]
    struct Wide {
        a: u64,
        b: u128,
        c: u8,
    }
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    let raw = ch.tx();
    let tx = ch.typed_tx::<Wide, Rkyv>().unwrap();
    for len in 0..64u8 {
        raw.send(&vec![len; len as usize]).unwrap();
        tx.send(&Wide {
            a: u64::from(len),
            b: u128::from(len) << 100,
            c: len,
        })
        .unwrap();
    }
    let mut rx = ch.typed_rx::<Wide, Rkyv>().unwrap();
    for len in 0..64u8 {
        match rx.try_recv_ref() {
            Err(TryRecvError::Failed(RecvError::Decode {
                offset,
                source: DecodeError::NotTyped { .. },
            })) => assert_eq!(offset, 2 * u64::from(len)),
            other => panic!("raw frame {len}: {other:?}"),
        }
        let a = rx.try_recv_ref().unwrap();
        assert_eq!(std::ptr::from_ref(&*a).addr() % 16, 0);
        assert_eq!(
            (a.a.to_native(), a.b.to_native(), a.c),
            (u64::from(len), u128::from(len) << 100, len)
        );
    }
}

#[test]
fn wrong_type_codec_version_and_raw_frames_are_typed_errors() {
    #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
    #[message(name = "test.Thing", version = 2)]
    struct ThingV2(u32);
    #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
    #[message(name = "test.Thing", version = 3)]
    struct ThingV3(u32);
    #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
    #[message(name = "test.Thing", version = 1)]
    struct ThingV1(u32);
    #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
    #[message(name = "test.Other", version = 2)]
    struct Other(u32);

    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    let mut rx = ch.typed_rx::<ThingV2, Postcard>().unwrap();
    ch.typed_tx::<ThingV3, Postcard>().unwrap().send(&ThingV3(3)).unwrap(); // 0
    ch.typed_tx::<ThingV1, Postcard>().unwrap().send(&ThingV1(1)).unwrap(); // 1
    ch.typed_tx::<Other, Postcard>().unwrap().send(&Other(9)).unwrap(); // 2
    ch.typed_tx::<ThingV2, Postcard>().unwrap().send(&ThingV2(2)).unwrap(); // 3
    // A raw message with exactly a typed ThingV2's bytes: still raw.
    let mut rawrx = ch.rx();
    for _ in 0..3 {
        rawrx.recv().unwrap();
    }
    let typed_bytes = rawrx.recv().unwrap();
    assert_eq!(typed_bytes.len(), 16 + 1, "a raw receiver sees header and body");
    ch.tx().send(&typed_bytes).unwrap(); // 4
    ch.tx().send(b"").unwrap(); // 5
    ch.typed_tx::<ThingV2, Postcard>().unwrap().send(&ThingV2(22)).unwrap(); // 6

    let mut next = || match rx.try_recv() {
        Err(TryRecvError::Failed(RecvError::Decode { offset, source })) => Err((offset, source)),
        Ok(v) => Ok(v),
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        next(),
        Err((
            0,
            DecodeError::NewerVersion {
                found: 3,
                supported: 2,
                ..
            }
        ))
    ));
    assert!(matches!(
        next(),
        Err((
            1,
            DecodeError::OlderVersion {
                found: 1,
                supported: 2,
                ..
            }
        ))
    ));
    let e = next().unwrap_err();
    assert!(
        matches!(&e, (2, DecodeError::WrongType { expected, .. }) if expected == "test.Thing"),
        "{e:?}"
    );
    assert_eq!(next().unwrap(), ThingV2(2));
    assert!(matches!(next(), Err((4, DecodeError::NotTyped { .. }))));
    assert!(matches!(next(), Err((5, DecodeError::NotTyped { .. }))));
    assert_eq!(next().unwrap(), ThingV2(22));
}

#[cfg(feature = "bincode")]
#[test]
fn another_codecs_bytes_are_wrong_codec() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    ch.typed_tx::<Order, filechannel::codec::Bincode>()
        .unwrap()
        .send(&order(1))
        .unwrap();
    ch.typed_tx::<Order, Postcard>().unwrap().send(&order(2)).unwrap();
    let mut rx = ch.typed_rx::<Order, Postcard>().unwrap();
    let e = rx.recv().unwrap_err();
    assert!(
        matches!(
            e,
            RecvError::Decode {
                offset: 0,
                source: DecodeError::WrongCodec {
                    expected: "postcard",
                    found: 2
                }
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("bincode"), "{e}");
    assert_eq!(rx.recv().unwrap(), order(2));
}

/// A frame whose header is right but whose body is not a `T` is a codec
/// error; the next message is fine.
#[test]
fn undecodable_body_is_a_codec_error_and_the_receiver_goes_on() {
    struct Garbage;
    impl Codec for Garbage {
        const ID: u32 = Postcard::ID; // pretends to be postcard
        const NAME: &'static str = "garbage";
    }
    impl Encode<Order> for Garbage {
        fn encode(_: &Order, buf: &mut Vec<u8>) -> Result<(), CodecError> {
            buf.extend_from_slice(&[0xff; 40]);
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    ch.typed_tx::<Order, Garbage>().unwrap().send(&order(0)).unwrap();
    ch.typed_tx::<Order, Postcard>().unwrap().send(&order(1)).unwrap();
    let mut rx = ch.typed_rx::<Order, Postcard>().unwrap();
    let e = rx.recv().unwrap_err();
    assert!(
        matches!(
            e,
            RecvError::Decode {
                offset: 0,
                source: DecodeError::Codec(CodecError::Decode { codec: "postcard", .. })
            }
        ),
        "{e:?}"
    );
    assert_eq!(rx.recv().unwrap(), order(1));
}

/// A codec of the user's own: a length-prefixed, protobuf-style sketch
/// (field 1 varint, field 2 bytes), without depending on prost.
#[test]
fn a_user_codec_plugs_in() {
    #[derive(Message, Serialize, Deserialize, Debug, PartialEq)]
    struct Ping {
        id: u64,
        body: String,
    }
    struct MiniProto;
    impl Codec for MiniProto {
        const ID: u32 = filechannel::codec::FIRST_USER_ID + 7;
        const NAME: &'static str = "mini-proto";
    }
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn read_varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }
    impl Encode<Ping> for MiniProto {
        fn encode(p: &Ping, buf: &mut Vec<u8>) -> Result<(), CodecError> {
            buf.push(0x08); // field 1, varint
            varint(p.id, buf);
            buf.push(0x12); // field 2, length-delimited
            varint(p.body.len() as u64, buf);
            buf.extend_from_slice(p.body.as_bytes());
            Ok(())
        }
    }
    impl Decode<Ping> for MiniProto {
        fn decode(mut b: &[u8]) -> Result<Ping, CodecError> {
            let bad = |why: &'static str| CodecError::decode::<Ping>("mini-proto", why);
            (b.first() == Some(&0x08))
                .then_some(())
                .ok_or_else(|| bad("field 1 missing"))?;
            b = &b[1..];
            let id = read_varint(&mut b).ok_or_else(|| bad("bad varint"))?;
            (b.first() == Some(&0x12))
                .then_some(())
                .ok_or_else(|| bad("field 2 missing"))?;
            b = &b[1..];
            let len = read_varint(&mut b).ok_or_else(|| bad("bad length"))? as usize;
            let body = b.get(..len).ok_or_else(|| bad("short body"))?;
            let body = String::from_utf8(body.to_vec()).map_err(|e| CodecError::decode::<Ping>("mini-proto", e))?;
            Ok(Ping { id, body })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    let tx = ch.typed_tx::<Ping, MiniProto>().unwrap();
    tx.send(&Ping {
        id: 300,
        body: "hello".into(),
    })
    .unwrap();
    let mut rx = ch.typed_rx::<Ping, MiniProto>().unwrap();
    let mut other = ch.typed_rx::<Ping, Postcard>().unwrap();
    assert_eq!(
        rx.recv().unwrap(),
        Ping {
            id: 300,
            body: "hello".into()
        }
    );
    // Postcard receivers of the same type refuse MiniProto frames.
    assert!(matches!(
        other.try_recv(),
        Err(TryRecvError::Failed(RecvError::Decode {
            source: DecodeError::WrongCodec { .. },
            ..
        }))
    ));
}

#[cfg(feature = "json")]
#[test]
fn encode_failure_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    let tx = ch
        .typed_tx::<BTreeMap<Vec<u8>, u8>, filechannel::codec::Json>()
        .unwrap();
    let mut m = BTreeMap::new();
    m.insert(vec![1u8], 1u8);
    assert!(matches!(tx.send(&m), Err(SendError::Encode(_))));
    assert_eq!(ch.write_offset(), 0);
    tx.send(&BTreeMap::new()).unwrap();
    assert_eq!(ch.write_offset(), 1);
    // JSON has no NaN: serde_json writes null, and `Some(NaN)` came back
    // as `None`. Refused at the send, and nothing written.
    let tx = ch.typed_tx::<Option<f64>, filechannel::codec::Json>().unwrap();
    assert!(matches!(tx.send(&Some(f64::NAN)), Err(SendError::Encode(_))));
    assert_eq!(ch.write_offset(), 1);
    tx.send(&Some(0.5)).unwrap();
    let mut rx = ch.typed_rx::<Option<f64>, filechannel::codec::Json>().unwrap();
    assert!(rx.try_recv().is_err(), "the map, not an Option<f64>");
    assert_eq!(rx.try_recv().unwrap(), Some(0.5));
}

#[test]
fn too_large_counts_the_header_and_closed_channels_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder().max_message_size(20).open(dir.path()).unwrap();
    let tx = ch.typed_tx::<Vec<u8>, Postcard>().unwrap();
    tx.send(&vec![7u8; 3]).unwrap(); // 16 + 1 + 3
    assert!(matches!(
        tx.send(&vec![7u8; 4]),
        Err(SendError::TooLarge { size: 21, max: 20 })
    ));
    ch.close().unwrap();
    assert!(matches!(ch.typed_tx::<u8, Postcard>(), Err(filechannel::Error::Closed)));
    assert!(matches!(ch.typed_rx::<u8, Postcard>(), Err(filechannel::Error::Closed)));
    assert!(matches!(tx.send(&vec![]), Err(SendError::Closed)));
}

#[test]
fn typed_ack_receiver_keeps_what_it_has_not_acked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open(dir.path(), Compression::None);
        let tx = ch.typed_tx::<(u32, String), Postcard>().unwrap();
        for i in 0..10 {
            tx.send(&(i, format!("m{i}"))).unwrap();
        }
        let mut rx = ch.typed_rx_ack::<(u32, String), Postcard>().unwrap();
        for i in 0..6 {
            assert_eq!(rx.recv().unwrap().0, i);
        }
        rx.ack(4).unwrap();
        assert_eq!(rx.acked_offset(), 4);
        ch.close().unwrap();
    }
    let ch = open(dir.path(), Compression::None);
    let mut rx = ch.typed_rx_ack::<(u32, String), Postcard>().unwrap();
    let got: Vec<u32> = rx.try_iter().map(|r| r.unwrap().0).collect();
    assert_eq!(got, (4..10).collect::<Vec<_>>());
    // The tuple's part order is part of its identity.
    let mut swapped = ch.typed_rx::<(String, u32), Postcard>().unwrap();
    assert!(matches!(
        swapped.try_recv(),
        Err(TryRecvError::Failed(RecvError::Decode {
            source: DecodeError::WrongType { .. },
            ..
        }))
    ));
}

#[test]
fn iter_yields_decode_errors_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    let tx = ch.typed_tx::<u64, Postcard>().unwrap();
    tx.send(&1).unwrap();
    ch.tx().send(b"raw").unwrap();
    tx.send(&3).unwrap();
    ch.close().unwrap();
    assert!(ch.typed_rx_ack::<u64, Postcard>().is_err(), "closed");
    drop(ch);
    let ch = open(dir.path(), Compression::None);
    let mut rx = ch.typed_rx::<u64, Postcard>().unwrap();
    let items: Vec<_> = rx.try_iter().collect();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].as_ref().unwrap(), &1);
    assert!(items[1].as_ref().unwrap_err().is_decode());
    assert_eq!(items[2].as_ref().unwrap(), &3);
    // The blocking iterator ends at close, after what is ready.
    ch.typed_tx::<u64, Postcard>().unwrap().send(&4).unwrap();
    ch.typed_tx::<u64, Postcard>().unwrap().send(&5).unwrap();
    assert_eq!(rx.len(), 2);
    ch.close().unwrap();
    let mut rest = Vec::new();
    for v in &mut rx {
        rest.push(v.unwrap());
    }
    assert_eq!(rest, [4, 5]);
    assert!(rx.is_empty());
    // By value too (`for v in rx`): decode errors are yielded and
    // iteration goes on to the close.
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    let rx = ch.typed_rx::<u64, Postcard>().unwrap();
    let tx = ch.typed_tx::<u64, Postcard>().unwrap();
    tx.send(&1).unwrap();
    ch.tx().send(b"raw").unwrap();
    tx.send(&3).unwrap();
    ch.close().unwrap();
    let all: Vec<_> = rx.into_iter().collect();
    assert_eq!(all.len(), 3);
    assert!(all[1].as_ref().unwrap_err().is_decode());
    let values: Vec<u64> = all.into_iter().filter_map(Result::ok).collect();
    assert_eq!(values, [1, 3]);
}

#[test]
fn composite_names() {
    assert_eq!(<Vec<Option<u32>>>::type_name(), "Vec<Option<u32>>");
    assert_eq!(<(u32, String)>::type_name(), "(u32, String)");
    assert_ne!(<(u32, String)>::NAME_HASH, <(String, u32)>::NAME_HASH);
    assert_ne!(<Vec<u32>>::NAME_HASH, <Option<u32>>::NAME_HASH);
    assert_ne!(<Vec<u32>>::NAME_HASH, <Vec<u64>>::NAME_HASH);
    assert_ne!(<Box<Order>>::NAME_HASH, Order::NAME_HASH);
    assert_eq!(<Box<Order>>::type_name(), "Box<test.Order>");
    assert_eq!(Order::NAME, "test.Order");
}

/// rkyv archives a `Box<T>` as a relative pointer to a `T`: read as a `T`,
/// its bytes would pass validation as garbage. The tags keep them apart.
#[cfg(feature = "rkyv")]
#[test]
fn a_boxed_value_is_not_its_contents() {
    #[derive(Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    #[message(name = "test.Id", version = 1)]
    #[rkyv(derive(Debug))]
    struct Id {
        id: u32,
    }
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    let mut rx = ch.typed_rx::<Id, filechannel::codec::Rkyv>().unwrap();
    let mut boxed_rx = ch.typed_rx::<Box<Id>, filechannel::codec::Rkyv>().unwrap();
    ch.typed_tx::<Box<Id>, filechannel::codec::Rkyv>()
        .unwrap()
        .send(&Box::new(Id { id: 7 }))
        .unwrap();
    ch.typed_tx::<Id, filechannel::codec::Rkyv>()
        .unwrap()
        .send(&Id { id: 8 })
        .unwrap();
    let wrong = |e: RecvError| {
        matches!(
            e,
            RecvError::Decode {
                source: DecodeError::WrongType { .. },
                ..
            }
        )
    };
    assert!(wrong(rx.recv_ref().unwrap_err()));
    assert_eq!(rx.recv_ref().unwrap().id, 8);
    assert_eq!(boxed_rx.recv().unwrap(), Box::new(Id { id: 7 }));
    assert!(wrong(boxed_rx.recv().unwrap_err()));
}

/// `Box<str>` and `Box<String>` (and `Box<[T]>` and `Box<Vec<T>>`) are
/// written alike by serde but archived differently by rkyv: their tags
/// differ, so a frame of one read as the other is `WrongType`, never a
/// validation failure or (unchecked) a pointer into nowhere.
#[test]
fn box_str_and_box_slice_have_tags_of_their_own() {
    assert_ne!(<Box<str>>::NAME_HASH, <Box<String>>::NAME_HASH);
    assert_ne!(<Box<[u32]>>::NAME_HASH, <Box<Vec<u32>>>::NAME_HASH);
    assert_eq!(<Box<[u32]>>::type_name(), "Box<[u32]>");
    #[cfg(feature = "rkyv")]
    {
        use filechannel::codec::Rkyv;
        let dir = tempfile::tempdir().unwrap();
        let ch = open(dir.path(), Compression::None);
        let mut rx = ch.typed_rx::<Box<String>, Rkyv>().unwrap();
        ch.typed_tx::<Box<str>, Rkyv>()
            .unwrap()
            .send(&Box::<str>::from("hello"))
            .unwrap();
        match rx.recv_ref().map(|r| r.offset()) {
            Err(RecvError::Decode {
                source: DecodeError::WrongType { .. },
                ..
            }) => {}
            other => panic!("expected WrongType, got {other:?}"),
        }
    }
}

/// `Box<str>` and `Box<[T]>` are received as they are sent (their `Migrate`
/// used to require a sized `T`: they could be sent, not received).
#[test]
fn box_str_and_box_slice_round_trip() {
    use filechannel::codec::Postcard;
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    let mut words = ch.typed_rx::<Box<str>, Postcard>().unwrap();
    let mut numbers = ch.typed_rx::<Box<[u32]>, Postcard>().unwrap();
    ch.typed_tx::<Box<str>, Postcard>()
        .unwrap()
        .send(&Box::<str>::from("hello"))
        .unwrap();
    ch.typed_tx::<Box<[u32]>, Postcard>()
        .unwrap()
        .send(&Box::<[u32]>::from([1, 2, 3]))
        .unwrap();
    assert_eq!(&*words.recv().unwrap(), "hello");
    // The first frame is the string's: another type for this receiver.
    assert!(matches!(
        numbers.recv(),
        Err(RecvError::Decode {
            source: DecodeError::WrongType { .. },
            ..
        })
    ));
    assert_eq!(&*numbers.recv().unwrap(), &[1, 2, 3]);
}

fn line_strategy() -> impl Strategy<Value = Line> {
    (".{0,12}", any::<u32>(), any::<i64>()).prop_map(|(sku, qty, price_cents)| Line { sku, qty, price_cents })
}

fn order_strategy() -> impl Strategy<Value = Order> {
    let status = prop_oneof![
        Just(Status::New),
        any::<u64>().prop_map(|at| Status::Paid { at }),
        ".{0,8}".prop_map(Status::Shipped),
    ];
    (
        any::<u64>(),
        ".{0,16}",
        proptest::collection::vec(line_strategy(), 0..5),
        proptest::option::of(".{0,20}"),
        status,
        proptest::collection::btree_map("[a-z]{0,6}", any::<u32>(), 0..4),
        any::<u128>(),
    )
        .prop_map(|(id, customer, lines, note, status, attrs, wide)| Order {
            id,
            customer,
            lines,
            note,
            status,
            attrs,
            wide,
        })
}

fn channel_round_trip<C: Encode<Order> + Decode<Order>>(orders: &[Order]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .segment_size(4096)
        .compression(Compression::None)
        .open(dir.path())
        .unwrap();
    let tx = ch.typed_tx::<Order, C>().unwrap();
    for o in orders {
        tx.send(o).unwrap();
    }
    let mut rx = ch.typed_rx::<Order, C>().unwrap();
    for o in orders {
        prop_assert_eq!(&rx.try_recv().unwrap(), o, "codec {}", C::NAME);
    }
    prop_assert!(rx.try_recv().unwrap_err().is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary orders round-trip, in order, through every codec and the
    /// channel (with 4 KiB segments, so batches span several).
    #[test]
    fn arbitrary_orders_round_trip(orders in proptest::collection::vec(order_strategy(), 1..40)) {
        channel_round_trip::<Postcard>(&orders)?;
        #[cfg(feature = "bincode")]
        channel_round_trip::<filechannel::codec::Bincode>(&orders)?;
        #[cfg(feature = "json")]
        channel_round_trip::<filechannel::codec::Json>(&orders)?;
        #[cfg(feature = "rkyv")]
        channel_round_trip::<filechannel::codec::Rkyv>(&orders)?;
    }
}

/// `try_iter` drains what is ready and then stays ended, typed as well as
/// raw (both are `FusedIterator`s): a message sent after the end is left
/// for the next call.
#[test]
fn try_iter_stays_ended_once_it_has_drained() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::None);
    let tx = ch.typed_tx::<u32, Postcard>().unwrap();
    let mut rx = ch.typed_rx::<u32, Postcard>().unwrap();
    let mut raw = ch.rx();
    tx.send(&1).unwrap();
    {
        let mut it = rx.try_iter();
        assert_eq!(it.next().map(Result::unwrap), Some(1));
        assert!(it.next().is_none());
        tx.send(&2).unwrap();
        assert!(it.next().is_none(), "the typed try_iter resumed after its end");
    }
    {
        let mut it = raw.try_iter();
        assert!(it.next().is_some_and(|m| m.is_ok()));
        assert!(it.next().is_some_and(|m| m.is_ok()));
        assert!(it.next().is_none());
        tx.send(&3).unwrap();
        assert!(it.next().is_none(), "the raw try_iter resumed after its end");
    }
    let rest: Vec<u32> = rx.try_iter().map(Result::unwrap).collect();
    assert_eq!(rest, [2, 3]);
}
