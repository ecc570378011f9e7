//! The schema registry: per (name, version) of a message type, the shape
//! fingerprint first used in this channel, and a readable description.
//!
//! It catches the classic mistake of changing a struct without bumping its
//! version: a typed sender of a (name, version) already registered with
//! another fingerprint is refused. It lives in one small text file,
//! rewritten crash-safely (temporary file, fsync, rename, directory fsync),
//! so it is always the old or the new version, never a torn one.

use crate::channel::Shared;
use crate::error::Error;
use crate::storage::{Storage, StorageFile};
use crate::typed::SchemaPart;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

/// The registry's file name in the channel directory.
pub const REGISTRY_FILE: &str = "schema.registry";
const REGISTRY_TMP: &str = "schema.registry.tmp";
const HEADER: &str = "# filechannel schema registry v1: name-hash version fingerprint name<TAB>shape";

/// A message type does not match the channel's schema registry, or the
/// registry cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The type's shape differs from the one registered for its name and
    /// version.
    #[error(
        "message {name} version {version} has changed shape since this channel registered it \
         (was `{registered_shape}`, now `{shape}`): bump its version (with `previous` pointing at the old type) \
         instead of changing it in place"
    )]
    Changed {
        /// The type's name.
        name: &'static str,
        /// Its version.
        version: u32,
        /// The registered fingerprint.
        registered: u64,
        /// The registered shape.
        registered_shape: String,
        /// The type's fingerprint now.
        found: u64,
        /// Its shape now.
        shape: &'static str,
    },
    /// The type a receiver reads an older version's frames with (its
    /// `previous` chain) differs from the shape registered for that version
    /// when they were written.
    #[error(
        "message {name} version {version}, which this receiver reads through its `previous` chain, has changed \
         shape since this channel registered it (was `{registered_shape}`, now `{shape}`): restore that type \
         exactly as it was while version {version} was being sent"
    )]
    PreviousChanged {
        /// The type's name.
        name: &'static str,
        /// The older version.
        version: u32,
        /// The registered fingerprint.
        registered: u64,
        /// The registered shape.
        registered_shape: String,
        /// The fingerprint of the type in the chain now.
        found: u64,
        /// Its shape now.
        shape: &'static str,
    },
    /// The registry file does not parse.
    #[error("schema registry {}: line {line} does not parse; the file was left untouched", path.display())]
    Corrupt {
        /// The registry file.
        path: PathBuf,
        /// The 1-based line number, or 0 when the file as a whole is bad
        /// (over 16 MiB, or not UTF-8).
        line: usize,
    },
    /// Reading or writing the registry failed.
    #[error("schema registry {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: Arc<io::Error>,
    },
}

impl SchemaError {
    fn io(path: &Path, e: io::Error) -> Self {
        SchemaError::Io {
            path: path.to_path_buf(),
            source: Arc::new(e),
        }
    }
}

/// One registered (name, version) of a message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// The type's name.
    pub name: String,
    /// Its name hash ([`Message::NAME_HASH`](crate::Message::NAME_HASH)).
    pub name_hash: u64,
    /// The version.
    pub version: u32,
    /// The shape fingerprint first used.
    pub fingerprint: u64,
    /// The shape, readable: field names and type tokens.
    pub shape: String,
}

/// The registry's contents, keyed by (name hash, version).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    entries: BTreeMap<(u64, u32), RegisteredSchema>,
    /// The file holds `entries` but its rename may not be durable (the
    /// directory fsync after it failed): the next sender's check writes it
    /// again before it reports success.
    unsynced: bool,
}

/// No tab or newline inside a field of the file.
fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

impl Registry {
    fn load<S: Storage>(storage: &S, dir: &Path) -> Result<Self, SchemaError> {
        let tmp = dir.join(REGISTRY_TMP);
        // An unfinished rewrite: the registry file itself is the old,
        // complete version.
        if crate::storage::remove_if_present(storage, &tmp).map_err(|e| SchemaError::io(&tmp, e))? {
            tracing::info!(path = %tmp.display(), "removed an unfinished schema registry write");
        }
        let path = dir.join(REGISTRY_FILE);
        let file = match storage.open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(SchemaError::io(&path, e)),
        };
        let len = file.len().map_err(|e| SchemaError::io(&path, e))?;
        if len > 16 << 20 {
            return Err(SchemaError::Corrupt { path, line: 0 });
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| SchemaError::io(&path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| SchemaError::Corrupt {
            path: path.clone(),
            line: 0,
        })?;
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = (|| {
                let (hash, rest) = line.split_once(' ')?;
                let (version, rest) = rest.split_once(' ')?;
                let (fingerprint, rest) = rest.split_once(' ')?;
                let (name, shape) = rest.split_once('\t')?;
                Some(RegisteredSchema {
                    name: name.to_string(),
                    name_hash: u64::from_str_radix(hash, 16).ok()?,
                    version: version.parse().ok()?,
                    fingerprint: u64::from_str_radix(fingerprint, 16).ok()?,
                    shape: shape.to_string(),
                })
            })();
            // A (name, version) twice: the file was not written by us
            // (every rewrite renders the map), and which line is right
            // cannot be told.
            let Some(e) = parsed.filter(|e| !entries.contains_key(&(e.name_hash, e.version))) else {
                return Err(SchemaError::Corrupt { path, line: i + 1 });
            };
            entries.insert((e.name_hash, e.version), e);
        }
        Ok(Registry {
            entries,
            unsynced: false,
        })
    }

    fn render(&self) -> String {
        let mut out = format!("{HEADER}\n");
        for e in self.entries.values() {
            out.push_str(&format!(
                "{:016x} {} {:016x} {}\t{}\n",
                e.name_hash,
                e.version,
                e.fingerprint,
                clean(&e.name),
                clean(&e.shape)
            ));
        }
        out
    }

    /// Writes the registry in place of the file: temporary file, fsync,
    /// rename (the caller fsyncs the directory).
    fn replace<S: Storage>(&self, storage: &S, dir: &Path) -> Result<(), SchemaError> {
        let tmp = dir.join(REGISTRY_TMP);
        crate::storage::remove_if_present(storage, &tmp).map_err(|e| SchemaError::io(&tmp, e))?;
        let file = storage.create_new(&tmp).map_err(|e| SchemaError::io(&tmp, e))?;
        file.write_all_at(self.render().as_bytes(), 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| SchemaError::io(&tmp, e))?;
        drop(file);
        let path = dir.join(REGISTRY_FILE);
        storage.rename(&tmp, &path).map_err(|e| SchemaError::io(&path, e))
    }
}

/// Runs `f` on the registry, loading it on first use. `Closed` once the
/// channel is closing: `close` takes this lock after marking the channel
/// closing and before it lets the directory lock go, so no registry I/O
/// runs without the directory lock (another owner's registry file could be
/// overwritten with ours, or its temporary file removed). Except that with
/// `in_memory_after_close`, for an `f` that does no I/O, a registry loaded
/// before the close is still used: a typed receiver draining after `close`
/// checks shapes recorded since it was made against it.
fn with_registry<S: Storage, R>(
    shared: &Shared<S>,
    in_memory_after_close: bool,
    f: impl FnOnce(&mut Registry) -> Result<R, Error>,
) -> Result<R, Error> {
    let mut guard = shared.registry.lock().unwrap_or_else(PoisonError::into_inner);
    if !(in_memory_after_close && guard.is_some()) {
        ensure_open(shared)?;
    }
    let reg = match &mut *guard {
        Some(r) => r,
        None => guard.insert(Registry::load(&shared.storage, &shared.dir)?),
    };
    f(reg)
}

/// `Closed` once the channel is closing.
pub(crate) fn ensure_open<S: Storage>(shared: &Shared<S>) -> Result<(), Error> {
    if shared.closing.load(std::sync::atomic::Ordering::Acquire) {
        Err(Error::Closed)
    } else {
        Ok(())
    }
}

/// Checks every part of a type's schema; if `register`, records the parts
/// seen for the first time, all in one rewrite: all of them or none (a part
/// that does not match leaves the others unrecorded too). `previous` (the
/// older versions a receiver reads) are checked where recorded, never
/// recorded. Returns whether every part is recorded now (always, after a
/// registering check). A type without parts (std types, hand-written
/// impls) reads nothing.
pub(crate) fn check<S: Storage>(
    shared: &Shared<S>,
    parts: &[SchemaPart],
    previous: &[SchemaPart],
    register: bool,
) -> Result<bool, Error> {
    if parts.is_empty() && previous.is_empty() {
        return ensure_open(shared).map(|()| true);
    }
    // A check that records nothing does no I/O once the registry is loaded.
    with_registry(shared, !register, |reg| {
        let mut new: BTreeMap<(u64, u32), RegisteredSchema> = BTreeMap::new();
        for SchemaPart {
            name,
            name_hash,
            version,
            schema,
        } in parts
        {
            let k = (*name_hash, *version);
            match reg.entries.get(&k).or_else(|| new.get(&k)) {
                Some(e) if e.fingerprint == schema.fingerprint => {}
                Some(e) => {
                    return Err(SchemaError::Changed {
                        name,
                        version: *version,
                        registered: e.fingerprint,
                        registered_shape: e.shape.clone(),
                        found: schema.fingerprint,
                        shape: schema.shape,
                    }
                    .into());
                }
                None => {
                    new.insert(
                        k,
                        RegisteredSchema {
                            name: name.to_string(),
                            name_hash: *name_hash,
                            version: *version,
                            fingerprint: schema.fingerprint,
                            shape: schema.shape.to_string(),
                        },
                    );
                }
            }
        }
        for part in previous {
            let recorded = reg.entries.get(&(part.name_hash, part.version));
            if let Some(e) = recorded.filter(|e| e.fingerprint != part.schema.fingerprint) {
                return Err(SchemaError::PreviousChanged {
                    name: part.name,
                    version: part.version,
                    registered: e.fingerprint,
                    registered_shape: e.shape.clone(),
                    found: part.schema.fingerprint,
                    shape: part.schema.shape,
                }
                .into());
            }
        }
        if !register || (new.is_empty() && !reg.unsynced) {
            return Ok(new.is_empty());
        }
        let added: Vec<(u64, u32)> = new.keys().copied().collect();
        reg.entries.extend(new);
        if let Err(e) = reg.replace(&shared.storage, &shared.dir) {
            for k in added {
                reg.entries.remove(&k);
            }
            return Err(e.into());
        }
        // Renamed: the file holds the new entries, so memory keeps them. Not
        // durable until a directory fsync succeeds: until then each sender's
        // check writes the file again.
        reg.unsynced = true;
        shared
            .storage
            .sync_dir(&shared.dir)
            .map_err(|e| SchemaError::io(&shared.dir, e))?;
        reg.unsynced = false;
        Ok(true)
    })
}

/// Everything registered, for tools and people.
pub(crate) fn list<S: Storage>(shared: &Shared<S>) -> Result<Vec<RegisteredSchema>, Error> {
    with_registry(shared, false, |reg| Ok(reg.entries.values().cloned().collect()))
}

#[cfg(test)]
mod tests {
    //! Reliability: a crash at every storage operation of a registry
    //! rewrite leaves, in the process-crash image and in power-loss images,
    //! either the old or the new registry: never a torn or lost one.
    use crate::codec::Codec;
    use crate::storage::sim::SimStorage;
    use crate::{FileChannel, Message, SchemaError};
    use std::path::Path;

    struct Nothing;
    impl Codec for Nothing {
        const ID: u32 = crate::codec::FIRST_USER_ID + 99;
        const NAME: &'static str = "nothing";
    }

    #[derive(Message)]
    #[message(name = "t.A", version = 1)]
    #[allow(dead_code)]
    struct A {
        x: u32,
    }
    #[derive(Message)]
    #[message(name = "t.A", version = 1)]
    #[allow(dead_code)]
    struct AChanged {
        x: u64,
    }
    #[derive(Message)]
    #[message(name = "t.B", version = 1)]
    #[allow(dead_code)]
    struct B {
        y: String,
    }
    #[derive(Message)]
    #[message(name = "t.B", version = 1)]
    #[allow(dead_code)]
    struct BChanged {
        y: Vec<u8>,
    }

    fn open(sim: SimStorage) -> FileChannel<SimStorage> {
        FileChannel::builder()
            .segment_size(4096)
            .open_with(sim, "/reg")
            .unwrap()
    }

    fn changed<T>(r: Result<T, crate::Error>) -> bool {
        matches!(r, Err(crate::Error::Schema(SchemaError::Changed { .. })))
    }

    /// The registry does not depend on the codec; the test runs with a
    /// codec-less stand-in and, with their features, Postcard and Rkyv.
    fn crash_at_every_step<C: Codec>() -> usize {
        let mut images = 0;
        for k in 1.. {
            let sim = SimStorage::new();
            let ch = open(sim.clone());
            ch.typed_tx::<A, C>().unwrap();
            sim.crash_at(sim.ops() + k);
            let second = ch.typed_tx::<B, C>();
            let Some(snap) = sim.snapshot() else {
                second.unwrap();
                assert!(k > 3, "the rewrite should take several operations");
                break;
            };
            drop(ch);
            for (i, image) in std::iter::once(snap.process_crash_image())
                .chain((0..3).map(|seed| snap.power_loss_image(k * 31 + seed)))
                // Nothing after the last fsyncs: after the rename and
                // before its directory fsync, the old registry.
                .chain(std::iter::once(snap.durable_image()))
                .enumerate()
            {
                images += 1;
                let ch = open(SimStorage::from_image(Path::new("/reg"), &image));
                // A was registered (and synced) before the crash: still there.
                assert!(changed(ch.typed_tx::<AChanged, C>()), "k={k} image {i}");
                let schemas = ch.schemas().unwrap();
                assert!(schemas.len() == 1 || schemas.len() == 2, "k={k} image {i}: {schemas:?}");
                if schemas.len() == 2 {
                    assert!(changed(ch.typed_tx::<BChanged, C>()), "k={k} image {i}");
                } else {
                    ch.typed_tx::<BChanged, C>().unwrap();
                }
            }
        }
        assert!(images >= 16, "{images} images");
        images
    }

    #[cfg(feature = "postcard")]
    #[derive(Message, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[message(name = "t.P", version = 1)]
    struct P {
        a: u32,
        b: u32,
    }
    #[cfg(feature = "postcard")]
    #[derive(Message, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[message(name = "t.P", version = 1)]
    struct PSwapped {
        b: u32,
        a: u32,
    }

    /// A receiver made before any sender of its type passes (nothing to
    /// compare with) and must not pin its guess; a sender that then records
    /// another shape is caught at the receiver's next message. It used to
    /// decode on: the swapped fields came out swapped, with no error. Also
    /// when the receiver drains after `close` (the usual shutdown order),
    /// which still decoded on until 2026-11-29 (from a read-only review).
    #[cfg(feature = "postcard")]
    #[test]
    fn a_receiver_made_before_any_sender_catches_a_shape_recorded_later() {
        use crate::codec::Postcard;
        use crate::{DecodeError, RecvError, TryRecvError};
        for close_first in [false, true] {
            let ch = open(SimStorage::new());
            let mut rx = ch.typed_rx::<P, Postcard>().unwrap();
            assert!(ch.schemas().unwrap().is_empty(), "the receiver pinned its shape");
            let tx = ch.typed_tx::<PSwapped, Postcard>().unwrap();
            tx.send(&PSwapped { b: 1, a: 2 }).unwrap();
            tx.send(&PSwapped { b: 3, a: 4 }).unwrap();
            if close_first {
                drop(tx);
                ch.close().unwrap();
                // The loaded registry serves receivers made before the
                // close, not new ones.
                assert!(matches!(ch.typed_rx::<P, Postcard>(), Err(crate::Error::Closed)));
            }
            for offset in 0..2 {
                match rx.try_recv() {
                    Err(TryRecvError::Failed(RecvError::Decode {
                        offset: o,
                        source: DecodeError::Schema(SchemaError::Changed { .. }),
                    })) => assert_eq!(o, offset),
                    other => panic!("closed first: {close_first}, message {offset}: {other:?}"),
                }
            }
        }
        // Made before a sender of the same shape, it reads on.
        let ch = open(SimStorage::new());
        let mut rx = ch.typed_rx::<P, Postcard>().unwrap();
        let tx = ch.typed_tx::<P, Postcard>().unwrap();
        tx.send(&P { a: 1, b: 2 }).unwrap();
        tx.send(&P { a: 3, b: 4 }).unwrap();
        assert_eq!(rx.try_recv().unwrap(), P { a: 1, b: 2 });
        assert_eq!(rx.try_recv().unwrap(), P { a: 3, b: 4 });
    }

    /// `TypedTx::new` and `TypedRx::new` check the registry as `typed_tx`
    /// and `typed_rx` do: wrapping a byte sender by hand was a way around
    /// the check.
    #[test]
    fn the_typed_constructors_check_the_registry() {
        let ch = open(SimStorage::new());
        crate::TypedTx::<A, Nothing, _>::new(ch.tx()).unwrap();
        assert!(changed(crate::TypedTx::<AChanged, Nothing, _>::new(ch.tx())));
        assert!(changed(crate::TypedRx::<AChanged, Nothing, _>::new(ch.rx())));
        assert!(changed(crate::TypedRx::<AChanged, Nothing, _>::new(ch.rx_ack())));
        assert_eq!(ch.schemas().unwrap().len(), 1);
    }

    /// A typed acking receiver refused by the schema check holds nothing
    /// back: it used to be built before the check and dropped on the
    /// error, leaving a ghost cursor at the head that kept every segment
    /// until the next acking receiver (from a read-only review).
    #[test]
    fn a_refused_typed_ack_receiver_holds_no_segment_back() {
        let ch = open(SimStorage::new());
        ch.typed_tx::<A, Nothing>().unwrap();
        assert!(changed(ch.typed_rx_ack::<AChanged, Nothing>()));
        let (tx, mut rx) = (ch.tx(), ch.rx());
        for _ in 0..20 {
            tx.send(&[0u8; 1000]).unwrap();
        }
        tx.flush().unwrap();
        assert!(ch.stats().segments > 4, "{:?}", ch.stats());
        for _ in 0..20 {
            rx.recv().unwrap();
        }
        crate::wait_until("consumed segments to go", || ch.stats().segments == 1);
    }

    /// A composite whose parts do not all match records none of them: the
    /// new part of a refused type must not be pinned by a sender that never
    /// sent anything.
    #[test]
    fn a_refused_composite_records_none_of_its_parts() {
        let ch = open(SimStorage::new());
        ch.typed_tx::<A, Nothing>().unwrap();
        assert!(changed(ch.typed_tx::<(B, AChanged), Nothing>()));
        assert_eq!(ch.schemas().unwrap().len(), 1, "B was recorded");
        ch.typed_tx::<BChanged, Nothing>().unwrap();
        // New parts of an accepted composite are all recorded, in one write.
        let sim = SimStorage::new();
        let ch = open(sim.clone());
        let before = sim.log().len();
        ch.typed_tx::<(A, B), Nothing>().unwrap();
        let renames = sim.log()[before..]
            .iter()
            .filter(|(_, op)| matches!(op, crate::storage::sim::OpKind::Rename(..)))
            .count();
        assert_eq!(renames, 1);
        assert_eq!(ch.schemas().unwrap().len(), 2);
    }

    /// A directory fsync that fails after the registry's rename leaves the
    /// new entry in the file: memory keeps it too (it used to drop it, so
    /// a changed type was then accepted over it), and the next sender's
    /// check writes the file again before it succeeds.
    #[test]
    fn an_entry_renamed_into_place_stays_when_the_directory_fsync_fails() {
        use crate::storage::sim::{FailPlan, OpKind};
        let sim = SimStorage::new();
        let ch = open(sim.clone());
        sim.fail(FailPlan {
            from_op: 1,
            once: true,
            kind: std::io::ErrorKind::Other,
            only: Some(crate::storage::sim::dir_syncs),
        });
        assert!(matches!(
            ch.typed_tx::<A, Nothing>(),
            Err(crate::Error::Schema(SchemaError::Io { .. }))
        ));
        assert!(changed(ch.typed_tx::<AChanged, Nothing>()));
        let before = sim.log().len();
        ch.typed_tx::<A, Nothing>().unwrap();
        let log = &sim.log()[before..];
        assert!(
            log.iter().any(|(_, op)| matches!(op, OpKind::Rename(..))),
            "not written again"
        );
        assert!(
            log.iter().any(|(_, op)| matches!(op, OpKind::SyncDir(..))),
            "not synced"
        );
        // Synced now: no more rewrites.
        let before = sim.log().len();
        ch.typed_tx::<A, Nothing>().unwrap();
        assert!(
            !sim.log()[before..]
                .iter()
                .any(|(_, op)| matches!(op, OpKind::Rename(..)))
        );
    }

    /// A type without schema parts (`String`) does not read the registry:
    /// a damaged one does not stop it, as it never did.
    #[test]
    fn a_type_without_schema_parts_does_not_read_the_registry() {
        let sim = SimStorage::new();
        let ch = open(sim.clone());
        ch.close().unwrap();
        drop(ch);
        let mut image = sim.peek().process_crash_image();
        image.insert(Path::new("/reg").join(super::REGISTRY_FILE), b"not a registry".to_vec());
        let ch = open(SimStorage::from_image(Path::new("/reg"), &image));
        ch.typed_tx::<String, Nothing>().unwrap();
        ch.typed_rx::<String, Nothing>().unwrap();
        assert!(matches!(
            ch.typed_tx::<A, Nothing>(),
            Err(crate::Error::Schema(SchemaError::Corrupt { line: 1, .. }))
        ));
        ch.close().unwrap();
        assert!(matches!(ch.typed_tx::<String, Nothing>(), Err(crate::Error::Closed)));
    }

    /// The same (name, version) on two lines is a corrupt registry (every
    /// write renders one line per entry), not "the last one wins".
    #[test]
    fn a_registry_with_a_duplicate_entry_is_corrupt() {
        let sim = SimStorage::new();
        let ch = open(sim.clone());
        ch.typed_tx::<A, Nothing>().unwrap();
        ch.close().unwrap();
        drop(ch);
        let path = Path::new("/reg").join(super::REGISTRY_FILE);
        let mut image = sim.peek().process_crash_image();
        let text = String::from_utf8(image[&path].clone()).unwrap();
        let entry = text.lines().nth(1).unwrap().to_string();
        image.insert(path, format!("{text}{entry}\n").into_bytes());
        let ch = open(SimStorage::from_image(Path::new("/reg"), &image));
        assert!(matches!(
            ch.typed_tx::<B, Nothing>(),
            Err(crate::Error::Schema(SchemaError::Corrupt { line: 3, .. }))
        ));
    }

    #[test]
    fn registry_survives_a_crash_at_every_step_of_its_write() {
        crash_at_every_step::<Nothing>();
        #[cfg(feature = "postcard")]
        crash_at_every_step::<crate::codec::Postcard>();
        #[cfg(feature = "rkyv")]
        crash_at_every_step::<crate::codec::Rkyv>();
    }
}
