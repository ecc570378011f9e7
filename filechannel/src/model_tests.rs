//! Model-based test (reliability test C): random sequences of send, receive,
//! ack, new/dropped receivers, close + reopen and crash + reopen, on the
//! in-memory backend, checked step by step against a plain model: a list of
//! messages and, per receiver, the next message and the acked position.
//!
//! 1,000 cases of up to 200 steps in CI; `PROPTEST_CASES=100000` for the
//! nightly size.

use crate::storage::sim::SimStorage;
use crate::{AckReceiver, Compression, Durability, FileChannel, Receiver, TryRecvError};
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use std::path::Path;

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = seq.to_le_bytes().to_vec();
    v.extend((0..len).map(|i| (seq as usize * 31 + i) as u8));
    v
}

#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Recv(usize),
    Ack(usize, u64),
    NewReceiver(bool),
    DropReceiver(usize),
    CloseReopen,
    CrashReopen,
}

#[derive(Debug, Clone)]
struct ModelRx {
    next: u64,
    acked: u64,
    acking: bool,
}

#[derive(Debug, Clone, Default)]
struct Model {
    sent: u64,
    lens: Vec<usize>,
    rxs: Vec<ModelRx>,
    ghosts: Vec<u64>,
    head: u64,
    /// After a crash: the head is somewhere in this range (the flusher may
    /// have recorded more than the model knows of).
    uncertain: Option<(u64, u64)>,
}

impl Model {
    fn consumed(r: &ModelRx) -> u64 {
        if r.acking { r.acked } else { r.next }
    }

    fn needed(&self) -> u64 {
        self.rxs
            .iter()
            .map(Self::consumed)
            .chain(self.ghosts.iter().copied())
            .min()
            .map_or(self.head, |m| m.max(self.head))
    }

    fn drop_rx(&mut self, i: usize) {
        self.head = self.head.max(self.needed());
        let r = self.rxs.remove(i);
        if r.acking {
            self.ghosts.push(r.acked);
        }
        self.head = self.head.max(self.needed());
    }
}

impl ReferenceStateMachine for Model {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    /// Only operations whose preconditions hold: generating ones that do
    /// not (a receive with no receiver, an ack with no acking receiver)
    /// wasted steps and, now and then, ran into proptest's limit of 65,536
    /// rejects and failed the run.
    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        let n = state.rxs.len();
        let acking: Vec<usize> = (0..n).filter(|&i| state.rxs[i].acking).collect();
        let mut arms: Vec<(u32, BoxedStrategy<Op>)> = vec![
            (6, (0usize..1500).prop_map(Op::Send).boxed()),
            (1, any::<bool>().prop_map(Op::NewReceiver).boxed()),
            (1, Just(Op::CloseReopen).boxed()),
            (1, Just(Op::CrashReopen).boxed()),
        ];
        if n > 0 {
            arms.push((6, (0..n).prop_map(Op::Recv).boxed()));
            arms.push((1, (0..n).prop_map(Op::DropReceiver).boxed()));
        }
        if !acking.is_empty() {
            let ack = (proptest::sample::select(acking), 0u64..8).prop_map(|(i, k)| Op::Ack(i, k));
            arms.push((2, ack.boxed()));
        }
        proptest::strategy::Union::new_weighted(arms).boxed()
    }

    fn preconditions(state: &Model, op: &Op) -> bool {
        match op {
            Op::Recv(i) | Op::DropReceiver(i) => *i < state.rxs.len(),
            Op::Ack(i, _) => state.rxs.get(*i).is_some_and(|r| r.acking),
            // The first receivers after a crash settle the uncertain head.
            _ => true,
        }
    }

    fn apply(mut s: Model, op: &Op) -> Model {
        match *op {
            Op::Send(len) => {
                s.lens.push(len);
                s.sent += 1;
            }
            Op::Recv(i) => {
                if s.rxs[i].next < s.sent {
                    s.rxs[i].next += 1;
                }
            }
            Op::Ack(i, k) => {
                let r = &mut s.rxs[i];
                if k <= r.next - r.acked {
                    r.acked += k;
                    s.head = s.head.max(s.needed());
                }
            }
            Op::NewReceiver(acking) => {
                let start = match s.uncertain.take() {
                    // The test SUT fast-forwards to the top of the range.
                    Some((_, hi)) if s.rxs.is_empty() => hi,
                    other => {
                        s.uncertain = other;
                        s.needed()
                    }
                };
                if acking {
                    s.ghosts.clear();
                }
                s.rxs.push(ModelRx {
                    next: start,
                    acked: start,
                    acking,
                });
            }
            Op::DropReceiver(i) => s.drop_rx(i),
            Op::CloseReopen => {
                while !s.rxs.is_empty() {
                    s.drop_rx(0);
                }
                s.head = s.head.max(s.needed());
                s.ghosts.clear();
                s.uncertain = s.uncertain.map(|(lo, hi)| (lo, hi.max(s.head)));
            }
            Op::CrashReopen => {
                let hi = s.needed().max(s.uncertain.map_or(0, |u| u.1));
                let lo = s.uncertain.map_or(s.head, |u| u.0).min(s.head);
                s.rxs.clear();
                s.ghosts.clear();
                s.uncertain = Some((lo, hi));
                s.head = hi;
            }
        }
        s
    }
}

enum Rx {
    Plain(Receiver<SimStorage>),
    Ack(AckReceiver<SimStorage>),
}

impl Rx {
    fn rx(&mut self) -> &mut Receiver<SimStorage> {
        match self {
            Rx::Plain(r) => r,
            Rx::Ack(r) => r,
        }
    }
}

struct Sut {
    sim: SimStorage,
    ch: FileChannel<SimStorage>,
    rxs: Vec<Rx>,
}

const DIR: &str = "/sim/model";

/// Messages received and checked, over all cases (to show the test does
/// reach its checks).
static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn open(sim: &SimStorage) -> FileChannel<SimStorage> {
    FileChannel::builder()
        .segment_size(4096)
        .durability(Durability::Flush)
        .compression(Compression::Snappy)
        .open_with(sim.clone(), DIR)
        .expect("open")
}

impl StateMachineTest for Sut {
    type SystemUnderTest = Sut;
    type Reference = Model;

    fn init_test(_: &Model) -> Sut {
        let sim = SimStorage::new();
        let ch = open(&sim);
        Sut {
            sim,
            ch,
            rxs: Vec::new(),
        }
    }

    fn apply(mut sut: Sut, model: &Model, op: Op) -> Sut {
        match op {
            Op::Send(len) => sut.ch.tx().send(&payload(model.sent - 1, len)).expect("send"),
            Op::Recv(i) => {
                // `model` is the state after this step: a receiver that got
                // a message moved its `next` past it, one that got nothing
                // did not (the message before is not this one's).
                let r = &model.rxs[i];
                let before = sut.rxs[i].rx().read_offset();
                let got = sut.rxs[i].rx().try_recv();
                match got {
                    Ok(m) => {
                        RECEIVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        assert_eq!(before + 1, r.next, "receiver {i} got a message past the model's");
                        let seq = r.next - 1;
                        assert_eq!(
                            m,
                            payload(seq, model.lens[seq as usize]),
                            "receiver {i} got the wrong message"
                        );
                    }
                    Err(TryRecvError::Empty) => {
                        assert_eq!(r.next, model.sent, "receiver {i} missed a message");
                        assert_eq!(before, r.next, "receiver {i} had a message ready and answered Empty");
                    }
                    Err(e) => panic!("receiver {i}: {e}"),
                }
            }
            Op::Ack(i, k) => {
                let Rx::Ack(rx) = &mut sut.rxs[i] else {
                    panic!("not an acking receiver")
                };
                let before = rx.acked_offset();
                let res = rx.ack(k);
                assert_eq!(
                    res.is_ok(),
                    model.rxs[i].acked == before + k,
                    "ack({k}) at {before}: {res:?}"
                );
                assert_eq!(rx.acked_offset(), model.rxs[i].acked);
            }
            Op::NewReceiver(acking) => {
                let want = model.rxs.last().map_or(0, |r| r.next);
                let mut rx = if acking {
                    Rx::Ack(sut.ch.rx_ack())
                } else {
                    Rx::Plain(sut.ch.rx())
                };
                let start = rx.rx().read_offset();
                // After a crash the head file may lag what the model knows:
                // fast-forward (that many messages are simply redelivered).
                assert!(start <= want, "new receiver starts at {start}, past {want}");
                while rx.rx().read_offset() < want {
                    rx.rx().try_recv().expect("fast-forward");
                }
                if let Rx::Ack(a) = &mut rx {
                    let n = a.read_offset() - a.acked_offset();
                    a.ack(n).expect("ack the fast-forwarded messages");
                }
                sut.rxs.push(rx);
            }
            Op::DropReceiver(i) => drop(sut.rxs.remove(i)),
            Op::CloseReopen => {
                sut.rxs.clear();
                sut.ch.close().expect("close");
                sut.ch = open(&sut.sim);
                assert_eq!(sut.ch.write_offset(), model.sent);
            }
            Op::CrashReopen => {
                sut.sim.crash_now();
                let image = sut.sim.snapshot().expect("snapshot").process_crash_image();
                sut.rxs.clear();
                sut.sim = SimStorage::from_image(Path::new(DIR), &image);
                sut.ch = open(&sut.sim);
                assert_eq!(sut.ch.write_offset(), model.sent, "a crash lost messages");
            }
        }
        sut
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn channel_behaves_like_the_model(sequential 1..200 => Sut);
}

#[test]
fn the_model_test_checks_received_messages() {
    // Runs after (or alongside) the model test in the same binary; on its
    // own it runs a short model test first.
    if RECEIVED.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        channel_behaves_like_the_model();
    }
    assert!(RECEIVED.load(std::sync::atomic::Ordering::Relaxed) > 0);
}
