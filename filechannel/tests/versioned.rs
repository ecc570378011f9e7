//! Schema-versioned messages: older frames migrate up the `previous` chain,
//! newer ones and other types are typed errors (or skipped / handed back
//! raw, by policy), mixed-version channels read in order. For Postcard and,
//! with the `rkyv` feature, Rkyv (whose `recv_ref` re-archives migrated
//! values).

use filechannel::codec::{Codec, Decode, Encode, Postcard};
use filechannel::{DecodeError, FileChannel, Message, Migrate, RecvError, TryRecvError, UnknownVersion};
use serde::{Deserialize, Serialize};

#[derive(
    Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq,
)]
#[message(name = "orders.Order", version = 1)]
struct OrderV1 {
    id: u64,
    qty: u32,
}

#[derive(
    Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq,
)]
#[message(name = "orders.Order", version = 2, previous = OrderV1)]
struct OrderV2 {
    id: u64,
    qty: u32,
    note: Option<String>,
}

impl From<OrderV1> for OrderV2 {
    fn from(v: OrderV1) -> Self {
        OrderV2 {
            id: v.id,
            qty: v.qty,
            note: None,
        }
    }
}

/// Version 3 renames a field and widens another: a real migration.
#[derive(
    Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq,
)]
#[message(name = "orders.Order", version = 3, previous = OrderV2)]
struct Order {
    id: u64,
    quantity: u64,
    note: String,
}

impl From<OrderV2> for Order {
    fn from(v: OrderV2) -> Self {
        Order {
            id: v.id,
            quantity: u64::from(v.qty),
            note: v.note.unwrap_or_else(|| "(none)".into()),
        }
    }
}

#[derive(Message, Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
#[message(name = "orders.Refund", version = 1)]
struct Refund {
    id: u64,
}

fn v1(id: u64) -> OrderV1 {
    OrderV1 { id, qty: id as u32 * 2 }
}
fn v2(id: u64) -> OrderV2 {
    OrderV2 {
        id,
        qty: id as u32 * 2,
        note: Some(format!("n{id}")),
    }
}
fn v3(id: u64) -> Order {
    Order {
        id,
        quantity: id * 2,
        note: format!("n{id}"),
    }
}

fn channel() -> (tempfile::TempDir, FileChannel) {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder().segment_size(8192).open(dir.path()).unwrap();
    (dir, ch)
}

/// V1 frames read as V2 and as V3 (two hops), V2 frames as V3; a mixed
/// channel (V1, V2, V1 senders interleaved) reads in order; across a reopen.
fn chain_and_mixed<C>()
where
    C: Encode<OrderV1> + Encode<OrderV2> + Encode<Order> + Encode<Refund>,
    C: Decode<OrderV1> + Decode<OrderV2> + Decode<Order> + Decode<Refund>,
{
    let (dir, ch) = channel();
    // An acking reader that never acks: everything survives the reopen.
    let keep = ch.typed_rx_ack::<Order, C>().unwrap();
    let mut as_v2 = ch.typed_rx::<OrderV2, C>().unwrap();
    let (t1, t2) = (
        ch.typed_tx::<OrderV1, C>().unwrap(),
        ch.typed_tx::<OrderV2, C>().unwrap(),
    );
    let mut expect_v2 = Vec::new();
    let mut expect_v3 = Vec::new();
    for id in 0..300 {
        if id % 3 == 1 {
            t2.send(&v2(id)).unwrap();
            expect_v2.push(v2(id));
            expect_v3.push(Order::from(v2(id)));
        } else {
            t1.send(&v1(id)).unwrap();
            expect_v2.push(OrderV2::from(v1(id)));
            expect_v3.push(Order::from(OrderV2::from(v1(id))));
        }
    }
    for (i, e) in expect_v2.iter().enumerate() {
        assert_eq!(&as_v2.try_recv().unwrap(), e, "{} V2 reader, message {i}", C::NAME);
    }
    drop((keep, as_v2, t1, t2));
    ch.close().unwrap();
    drop(ch);
    let ch = FileChannel::builder().segment_size(8192).open(dir.path()).unwrap();
    let mut as_v3 = ch.typed_rx_ack::<Order, C>().unwrap();
    let got: Vec<Order> = as_v3.try_iter().map(Result::unwrap).collect();
    assert_eq!(got, expect_v3, "{} V3 reader after reopen", C::NAME);
}

#[test]
fn postcard_chain_and_mixed() {
    chain_and_mixed::<Postcard>();
}

#[cfg(feature = "rkyv")]
#[test]
fn rkyv_chain_and_mixed() {
    chain_and_mixed::<filechannel::codec::Rkyv>();
}

/// A V3 frame to a V2 reader is `NewerVersion`; another type's frame is
/// `WrongType`; the reader goes on after each.
fn newer_and_other_types<C>()
where
    C: Encode<OrderV2> + Encode<Order> + Encode<Refund> + Decode<OrderV2> + Decode<OrderV1>,
{
    let (_dir, ch) = channel();
    let mut rx = ch.typed_rx::<OrderV2, C>().unwrap();
    ch.typed_tx::<Order, C>().unwrap().send(&v3(1)).unwrap();
    ch.typed_tx::<Refund, C>().unwrap().send(&Refund { id: 2 }).unwrap();
    ch.typed_tx::<OrderV2, C>().unwrap().send(&v2(3)).unwrap();
    let e = rx.try_recv().unwrap_err();
    assert!(
        matches!(
            e,
            TryRecvError::Failed(RecvError::Decode {
                offset: 0,
                source: DecodeError::NewerVersion {
                    name: "orders.Order",
                    found: 3,
                    supported: 2
                }
            })
        ),
        "{e:?}"
    );
    let e = rx.try_recv().unwrap_err();
    assert!(
        matches!(&e, TryRecvError::Failed(RecvError::Decode { offset: 1, source: DecodeError::WrongType { expected, .. } }) if expected == "orders.Order"),
        "{e:?}"
    );
    assert_eq!(rx.try_recv().unwrap(), v2(3));
}

#[test]
fn postcard_newer_and_other_types() {
    newer_and_other_types::<Postcard>();
}

#[cfg(feature = "rkyv")]
#[test]
fn rkyv_newer_and_other_types() {
    newer_and_other_types::<filechannel::codec::Rkyv>();
}

/// Rolling-deploy policies: skip newer frames (counted), or get their bytes.
#[test]
fn unknown_version_policies() {
    let (_dir, ch) = channel();
    let mut skip = ch
        .typed_rx::<OrderV2, Postcard>()
        .unwrap()
        .on_unknown_version(UnknownVersion::Skip);
    let mut raw = ch
        .typed_rx::<OrderV2, Postcard>()
        .unwrap()
        .on_unknown_version(UnknownVersion::Raw);
    ch.typed_tx::<Order, Postcard>().unwrap().send(&v3(1)).unwrap();
    ch.typed_tx::<OrderV1, Postcard>().unwrap().send(&v1(2)).unwrap();
    ch.typed_tx::<Order, Postcard>().unwrap().send(&v3(3)).unwrap();
    assert_eq!(skip.try_recv().unwrap(), OrderV2::from(v1(2)));
    assert!(skip.try_recv().unwrap_err().is_empty());
    assert_eq!(skip.skipped(), 2);

    match raw.try_recv() {
        Err(TryRecvError::Failed(RecvError::Decode {
            offset: 0,
            source: DecodeError::NewerVersionRaw { name, found, body },
        })) => {
            assert_eq!((name, found), ("orders.Order", 3));
            assert_eq!(<Postcard as Decode<Order>>::decode(&body).unwrap(), v3(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.try_recv().unwrap(), OrderV2::from(v1(2)));
}

/// `recv_ref` serves current frames from the map and older ones, migrated
/// and re-archived, from the receiver's own aligned buffer, through the
/// same guard type.
#[cfg(feature = "rkyv")]
#[test]
fn rkyv_recv_ref_migrates_older_frames() {
    use filechannel::codec::Rkyv;
    let (_dir, ch) = channel();
    let mut rx = ch.typed_rx::<Order, Rkyv>().unwrap();
    ch.typed_tx::<OrderV1, Rkyv>().unwrap().send(&v1(1)).unwrap();
    ch.typed_tx::<Order, Rkyv>().unwrap().send(&v3(2)).unwrap();
    ch.typed_tx::<OrderV2, Rkyv>().unwrap().send(&v2(3)).unwrap();

    let a = rx.try_recv_ref().unwrap();
    let addr = std::ptr::from_ref(&*a).addr();
    assert_eq!(
        (a.id.to_native(), a.quantity.to_native(), a.note.as_str()),
        (1, 2, "(none)")
    );
    assert!(
        !rx.get_ref().mapped_range().contains(&addr),
        "a migrated value is a copy"
    );

    let a = rx.try_recv_ref().unwrap();
    let addr = std::ptr::from_ref(&*a).addr();
    assert_eq!(
        (a.id.to_native(), a.quantity.to_native(), a.note.as_str()),
        (2, 4, "n2")
    );
    assert!(
        rx.get_ref().mapped_range().contains(&addr),
        "a current value is read in place"
    );

    let a = rx.try_recv_ref().unwrap();
    assert_eq!(
        (a.id.to_native(), a.quantity.to_native(), a.note.as_str()),
        (3, 6, "n3")
    );
}

/// Another codec's frames are never migrated: `WrongCodec`.
#[cfg(feature = "rkyv")]
#[test]
fn another_codec_is_not_migrated() {
    let (_dir, ch) = channel();
    let mut rx = ch.typed_rx::<Order, Postcard>().unwrap();
    ch.typed_tx::<OrderV1, filechannel::codec::Rkyv>()
        .unwrap()
        .send(&v1(1))
        .unwrap();
    assert!(matches!(
        rx.try_recv(),
        Err(TryRecvError::Failed(RecvError::Decode {
            source: DecodeError::WrongCodec { .. },
            ..
        }))
    ));
}

/// A hand-written `Message` with its one-line `Migrate`.
#[test]
fn hand_written_message() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Ping(u64);
    impl Message for Ping {
        const NAME: &'static str = "net.Ping";
        const VERSION: u32 = 4;
    }
    impl<C: Codec> Migrate<C> for Ping {}
    let (_dir, ch) = channel();
    let mut rx = ch.typed_rx::<Ping, Postcard>().unwrap();
    ch.typed_tx::<Ping, Postcard>().unwrap().send(&Ping(9)).unwrap();
    assert_eq!(rx.try_recv().unwrap(), Ping(9));
}
