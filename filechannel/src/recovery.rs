//! Opening a directory: find the segments, check that they form one unbroken
//! chain, repair what a crash can leave behind, and hand the newest segment
//! to the writer. Also creating segments, fresh or from a recycled spare.
//!
//! What a crash can leave, and what happens to it:
//! - a torn or partly persisted tail in the newest segment: the valid frames
//!   are kept, everything after them is zeroed (so a stale frame can never
//!   resurface after new writes) and the trimmed offset is logged;
//! - an older segment whose seal frame did not reach the disk (power loss in
//!   a non-`Sync` mode): its valid frames are kept and a seal is written after
//!   them; lost unconfirmed messages are logged as a gap in sequence numbers;
//! - a newest segment whose header never reached the disk (a crash while it
//!   was being created; it holds no readable frame): removed;
//! - `spare.*` files (consumed segments kept for reuse): kept as spares.
//!
//! Anything else that does not parse is an error naming the file; nothing is
//! guessed and nothing else is deleted.

use crate::compress::{COMPRESSED_HEADER_LEN, CompressedHeader, Packed, read_compressed};
use crate::config::Builder;
use crate::error::Error;
use crate::format::{
    FLAG_SEAL, FORMAT_VERSION, FRAME_HEADER_LEN, FrameHeader, HeaderProblem, SEGMENT_HEADER_LEN, SegmentHeader,
    compressed_file_name, parse_compressed_file_name, parse_compressing_file_name, parse_segment_file_name,
    parse_spare_file_name, segment_file_name, segment_seed,
};
use crate::segment::{SegMeta, read_frame};
use crate::storage::{MapWriter, SegmentMap, Storage, StorageFile};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The newest segment, ready for the writer.
pub(crate) struct Active<S: Storage> {
    pub id: u64,
    pub file: Arc<S::File>,
    pub map: Arc<SegmentMap>,
    pub writer: MapWriter,
    pub next_seq: u64,
}

pub(crate) struct Recovered<S: Storage> {
    pub segments: BTreeMap<u64, SegMeta>,
    pub active: Active<S>,
    pub spares: Vec<crate::catalog::Spare<S>>,
}

/// Recovers the channel in `dir` (already locked by the caller). Everything
/// kept is fsynced before this returns.
pub(crate) fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &Builder,
    trust_seals: bool,
    head_seq: u64,
) -> Result<Recovered<S>, Error> {
    let names = storage.list(dir).map_err(|e| Error::io(dir, e))?;
    let mut changed = false;
    for name in names.iter().filter(|n| parse_compressing_file_name(n).is_some()) {
        // An interrupted compression; the plain segment is intact.
        let path = dir.join(name);
        tracing::info!(path = %path.display(), "removing an unfinished compressed segment");
        storage.remove(&path).map_err(|e| Error::io(&path, e))?;
        changed = true;
    }
    let mut plain: BTreeSet<u64> = names.iter().filter_map(|n| parse_segment_file_name(n)).collect();
    let mut packed: BTreeSet<u64> = names.iter().filter_map(|n| parse_compressed_file_name(n)).collect();
    let both: Vec<u64> = plain.intersection(&packed).copied().collect();
    for id in both {
        // A crash between writing the compressed copy and deleting the plain
        // file: the copy wins only if it is complete and valid.
        let z = dir.join(compressed_file_name(id));
        let newest = plain.last() == Some(&id) && packed.last() == Some(&id);
        match read_compressed(storage, &z) {
            // Only a sealed segment is ever compressed: a copy of the newest
            // one is not ours to trust.
            Ok((h, _)) if h.id == id && !newest => {
                let p = dir.join(segment_file_name(id));
                storage.remove(&p).map_err(|e| Error::io(&p, e))?;
                plain.remove(&id);
            }
            other => {
                let reason = other
                    .err()
                    .unwrap_or_else(|| "it does not match its plain segment".into());
                tracing::warn!(path = %z.display(), %reason, "removing a broken compressed copy; the plain segment stays");
                storage.remove(&z).map_err(|e| Error::io(&z, e))?;
                packed.remove(&id);
            }
        }
        changed = true;
    }
    if changed {
        storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut ids: Vec<u64> = plain.union(&packed).copied().collect();
    drop_consumed_below_gap(storage, dir, &packed, &mut ids, head_seq)?;
    let spares: Vec<PathBuf> = names
        .iter()
        .filter(|n| parse_spare_file_name(n))
        .map(|n| dir.join(n))
        .collect();
    for pair in ids.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(Error::MissingSegment {
                dir: dir.to_path_buf(),
                missing: pair[0] + 1,
                before: pair[0],
                after: pair[1],
            });
        }
    }

    // Headers first: they are small, and a bad one must stop the open before
    // anything is changed. Files are opened one at a time: a long channel
    // must not need a descriptor per segment.
    let mut segments: BTreeMap<u64, SegMeta> = BTreeMap::new();
    let mut end_seqs: BTreeMap<u64, u64> = BTreeMap::new();
    for (i, &id) in ids.iter().enumerate() {
        let newest = i + 1 == ids.len();
        if packed.contains(&id) {
            let path = dir.join(compressed_file_name(id));
            if newest {
                return Err(Error::BadSegment {
                    path,
                    reason: "the newest segment is compressed (only sealed segments are); its plain file is missing"
                        .into(),
                });
            }
            let (header, file_len) = read_packed_header(storage, &path, id)?;
            // Only lengths no settings can produce are refused here: the
            // segment may come from a channel with larger segments or
            // messages than this open's. Reading it allocates `plain_len`
            // bytes lazily (`HeapMap::zeroed`) and checks the decompressed
            // length, and the length is checked against the next segment
            // below.
            let limit = Builder::largest_segment_capacity();
            if header.plain_len > limit {
                return Err(Error::BadSegment {
                    path,
                    reason: format!(
                        "records {} bytes of segment, more than the {limit} any channel can have",
                        header.plain_len
                    ),
                });
            }
            push_meta(
                &mut segments,
                &path,
                id,
                SegMeta {
                    base_seq: header.base_seq,
                    base_pos: header.base_pos,
                    packed: Some(Packed {
                        method: header.method,
                        plain_len: header.plain_len,
                        file_len,
                    }),
                },
            )?;
            end_seqs.insert(id, header.end_seq);
            continue;
        }
        let path = dir.join(segment_file_name(id));
        let file = storage.open(&path, false).map_err(|e| Error::io(&path, e))?;
        let header = match read_header(&file, &path, id) {
            Ok(h) => h,
            Err(e) if newest && holds_no_frame(&file) => {
                tracing::warn!(path = %path.display(), error = %e, "removing a segment whose creation was interrupted (no valid header, no frames)");
                drop(file);
                storage.remove(&path).map_err(|e| Error::io(&path, e))?;
                storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
                continue;
            }
            Err(e) => return Err(e),
        };
        push_meta(
            &mut segments,
            &path,
            id,
            SegMeta {
                base_seq: header.base_seq,
                base_pos: header.base_pos,
                packed: None,
            },
        )?;
    }

    // A newest segment without a frame after a predecessor without its seal
    // is a rotation that never finished (a crash, or a creation whose clean-up
    // failed): the predecessor may even have taken more messages since. The
    // empty segment goes and the predecessor is the active one again.
    let last_two: Vec<(u64, SegMeta)> = segments.iter().rev().take(2).map(|(&id, &m)| (id, m)).collect();
    if let [(newest, newest_meta), (prev, prev_meta)] = last_two[..]
        && prev_meta.packed.is_none()
    {
        let path = dir.join(segment_file_name(newest));
        let file = storage.open(&path, false).map_err(|e| Error::io(&path, e))?;
        let prev_path = dir.join(segment_file_name(prev));
        let empty = holds_no_valid_frame(&file, newest, newest_meta.base_seq);
        if empty && !has_seal(storage, &prev_path, prev, prev_meta, newest_meta)? {
            drop(file);
            tracing::warn!(path = %path.display(), "removing an empty segment whose predecessor was never sealed (an unfinished rotation)");
            storage.remove(&path).map_err(|e| Error::io(&path, e))?;
            storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
            segments.remove(&newest);
        }
    }

    // Older segments must end with a seal frame where the next header says;
    // each is fsynced, since a crash of the process may have left it dirty.
    let kept: Vec<(u64, SegMeta)> = segments.iter().map(|(&id, &m)| (id, m)).collect();
    for pair in kept.windows(2) {
        let ((id, this), (_, next)) = (pair[0], pair[1]);
        match end_seqs.get(&id) {
            // A compressed segment was sealed when it was compressed; its
            // header says where it ends.
            Some(&end) => {
                let expected_len = (next.base_pos - this.base_pos).checked_add(SEGMENT_HEADER_LEN);
                let plain_len = this.packed.map(|p| p.plain_len);
                if end != next.base_seq || plain_len != expected_len {
                    return Err(Error::BadSegment {
                        path: dir.join(compressed_file_name(id)),
                        reason: format!(
                            "ends at sequence {end} and {plain_len:?} bytes, but the next segment starts at {} \
                             (expected {expected_len:?} bytes)",
                            next.base_seq
                        ),
                    });
                }
            }
            None => check_seal(storage, &dir.join(segment_file_name(id)), id, this, next, trust_seals)?,
        }
    }

    let spares = usable_spares(storage, dir, config, spares, kept.last().map_or(1, |&(id, _)| id))?;
    let Some(&(id, meta)) = kept.last() else {
        let active = create_segment(storage, dir, config, &mut None, 1, 0, 0, 0, true)?;
        segments.insert(
            1,
            SegMeta {
                base_seq: 0,
                base_pos: 0,
                packed: None,
            },
        );
        return Ok(Recovered {
            segments,
            active,
            spares,
        });
    };
    let path = dir.join(segment_file_name(id));
    let file = storage.open(&path, true).map_err(|e| Error::io(&path, e))?;
    let (end, next_seq) = reopen_newest(&file, &path, id, meta)?;
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    let file = Arc::new(file);
    // A file cut short after its last frame (by hand, or a copy) still gets
    // room for the seal that the next rotation appends: without it the
    // segment would end unsealed, and nobody could read past it.
    let len = file
        .len()
        .map_err(|e| Error::io(&path, e))?
        .max(end as u64 + FRAME_HEADER_LEN);
    // Re-reserve in case blocks were freed (holes punched, say).
    file.allocate(len).map_err(|e| Error::io(&path, e))?;
    let map = file.map(len, true).map_err(|e| Error::io(&path, e))?;
    let (map, writer) = SegmentMap::writable(map, end);
    Ok(Recovered {
        segments,
        active: Active {
            id,
            file,
            map,
            writer,
            next_seq,
        },
        spares,
    })
}

/// Deletes the segments before the last gap in `ids` if every message in
/// them is below the head (consumed by every receiver): files GC retired
/// whose removal failed (logged then), which would otherwise stop every open
/// with [`Error::MissingSegment`] although nothing needed is missing. A gap
/// with anything needed below it is left for the caller to report.
fn drop_consumed_below_gap<S: Storage>(
    storage: &S,
    dir: &Path,
    packed: &BTreeSet<u64>,
    ids: &mut Vec<u64>,
    head_seq: u64,
) -> Result<(), Error> {
    let Some(gap) = ids.windows(2).rposition(|p| p[1] != p[0] + 1) else {
        return Ok(());
    };
    let after = ids[gap + 1];
    let after_base = if packed.contains(&after) {
        read_packed_header(storage, &dir.join(compressed_file_name(after)), after)?
            .0
            .base_seq
    } else {
        let path = dir.join(segment_file_name(after));
        let file = storage.open(&path, false).map_err(|e| Error::io(&path, e))?;
        read_header(&file, &path, after)?.base_seq
    };
    if head_seq < after_base {
        return Ok(());
    }
    for id in ids.drain(..=gap) {
        for path in [dir.join(segment_file_name(id)), dir.join(compressed_file_name(id))] {
            if crate::storage::remove_if_present(storage, &path).map_err(|e| Error::io(&path, e))? {
                tracing::warn!(path = %path.display(), head = head_seq, "deleting a consumed segment left behind a gap (its earlier removal failed)");
            }
        }
    }
    storage.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// The spares worth keeping, with their lengths: deletes those too small
/// for a segment under the current settings (a reopen with a larger
/// `segment_size`: never reused, they would hold the spare slots and their
/// disk space for good), and those whose header names a segment past
/// `newest`.
///
/// Outside `Sync` mode a rotation renames a spare into place without a
/// directory fsync, so a power loss can leave the file under its spare name
/// with the new segment's header and frames, while the chain ends before
/// that segment. The next rotation creates the same id again, with the same
/// first sequence number and position: reusing that file, its stale frames
/// would check out (the CRC seed is the segment id) and come back as
/// messages after the new ones. A spare is only ever given an id above all
/// of its earlier ones, and its header is fsynced before any frame is
/// written, so a header at or below `newest` rules that out. One that cannot
/// be deleted is left out of the list, never reused.
fn usable_spares<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &Builder,
    spares: Vec<PathBuf>,
    newest: u64,
) -> Result<Vec<crate::catalog::Spare<S>>, Error> {
    let mut kept = Vec::with_capacity(spares.len());
    let mut removed = false;
    for path in spares {
        let file = storage.open(&path, true).map_err(|e| Error::io(&path, e))?;
        let len = file.len().map_err(|e| Error::io(&path, e))?;
        let ahead = matches!(read_segment_header(&file), Ok(Ok(h)) if h.id > newest);
        let why = if ahead {
            "it holds frames of a segment not created yet (a rotation lost to a power loss)"
        } else if len < config.segment_capacity(0) {
            "it is smaller than a segment under the current settings"
        } else if !matches!(file.try_lock(true), Ok(true)) {
            // A receiver of an earlier owner's channel that opened it by its
            // segment name may map it: deleted, never rewritten.
            "it is locked: someone may map it"
        } else {
            kept.push(crate::catalog::Spare { path, len, file });
            continue;
        };
        drop(file);
        tracing::warn!(path = %path.display(), newest, reason = why, "deleting a spare segment file");
        match storage.remove(&path) {
            Ok(()) => removed = true,
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not delete it; it is not reused"),
        }
    }
    if removed {
        storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(kept)
}

/// Adds a segment's metadata, checking that it follows the previous one.
fn push_meta(segments: &mut BTreeMap<u64, SegMeta>, path: &Path, id: u64, meta: SegMeta) -> Result<(), Error> {
    // Far beyond anything a channel reaches (2^62 messages, bytes or
    // segments), and far enough from `u64::MAX` that counting on from a
    // header (`seq + 1`, `id + 1`, positions plus frame lengths) cannot
    // overflow: only a crafted header with a valid CRC gets here.
    const LIMIT: u64 = 1 << 62;
    if id >= LIMIT || meta.base_seq >= LIMIT || meta.base_pos >= LIMIT {
        return Err(Error::BadSegment {
            path: path.to_path_buf(),
            reason: format!(
                "segment id {id}, sequence number {} or position {} is out of range (at most 2^62)",
                meta.base_seq, meta.base_pos
            ),
        });
    }
    if let Some((_, prev)) = segments.last_key_value()
        && (meta.base_seq < prev.base_seq || meta.base_pos <= prev.base_pos)
    {
        return Err(Error::BadSegment {
            path: path.to_path_buf(),
            reason: "the header's sequence number or position goes backwards from the previous segment".into(),
        });
    }
    segments.insert(id, meta);
    Ok(())
}

/// Reads and checks a compressed segment's header (the body's checksum is
/// checked when it is read). Returns it and the file's length.
fn read_packed_header<S: Storage>(storage: &S, path: &Path, id: u64) -> Result<(CompressedHeader, u64), Error> {
    let bad = |reason: String| Error::BadSegment {
        path: path.to_path_buf(),
        reason,
    };
    let file = storage.open(path, false).map_err(|e| Error::io(path, e))?;
    let len = file.len().map_err(|e| Error::io(path, e))?;
    if len < COMPRESSED_HEADER_LEN as u64 {
        return Err(bad(format!(
            "the file is {len} bytes, shorter than a compressed segment header"
        )));
    }
    let mut raw = [0u8; COMPRESSED_HEADER_LEN];
    file.read_exact_at(&mut raw, 0).map_err(|e| Error::io(path, e))?;
    let header = CompressedHeader::from_bytes(&raw).map_err(bad)?;
    if header.id != id {
        return Err(bad(format!(
            "header says segment {} but the file name says {id}",
            header.id
        )));
    }
    if Some(len) != header.body_len.checked_add(COMPRESSED_HEADER_LEN as u64) {
        return Err(bad(format!(
            "the file is {len} bytes but its header records a body of {} bytes",
            header.body_len
        )));
    }
    Ok((header, len))
}

/// Reads the segment header at the start of `file` and parses it: the outer
/// error is the read's, the inner one says why the bytes are no header.
pub(crate) fn read_segment_header<F: StorageFile>(file: &F) -> io::Result<Result<SegmentHeader, HeaderProblem>> {
    let mut raw = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut raw, 0)?;
    Ok(SegmentHeader::from_bytes(&raw))
}

/// Reads and checks a segment header.
fn read_header<F: StorageFile>(file: &F, path: &Path, id: u64) -> Result<SegmentHeader, Error> {
    let len = file.len().map_err(|e| Error::io(path, e))?;
    if len < SEGMENT_HEADER_LEN {
        return Err(Error::BadSegment {
            path: path.to_path_buf(),
            reason: format!("the file is {len} bytes, shorter than a segment header"),
        });
    }
    let parsed = read_segment_header(file).map_err(|e| Error::io(path, e))?;
    let header = parsed.map_err(|p| match p {
        HeaderProblem::UnknownVersion(version) => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            supported: FORMAT_VERSION,
        },
        HeaderProblem::BadMagic => Error::BadSegment {
            path: path.to_path_buf(),
            reason: "not a filechannel segment (bad magic number)".into(),
        },
        HeaderProblem::BadChecksum => Error::BadSegment {
            path: path.to_path_buf(),
            reason: "segment header checksum mismatch".into(),
        },
    })?;
    if header.id != id {
        return Err(Error::BadSegment {
            path: path.to_path_buf(),
            reason: format!("header says segment {} but the file name says {id}", header.id),
        });
    }
    Ok(header)
}

/// Whether the segment holds no valid first frame (a recycled file still
/// holds the old segment's frames, which fail their CRC here).
fn holds_no_valid_frame<F: StorageFile>(file: &F, id: u64, base_seq: u64) -> bool {
    let Ok(len) = file.len() else { return false };
    let Ok(map) = file.map(len, false) else { return false };
    let map = SegmentMap::sealed(map);
    !matches!(read_frame(&map, segment_seed(id), SEGMENT_HEADER_LEN as usize, base_seq), Ok(Some(f)) if !f.header.is_seal())
}

/// Whether the place of the first frame is empty (all zero or past the end):
/// such a file holds no message whatever its header says.
fn holds_no_frame<F: StorageFile>(file: &F) -> bool {
    let mut raw = [0u8; FRAME_HEADER_LEN as usize];
    match file.read_exact_at(&mut raw, SEGMENT_HEADER_LEN) {
        Ok(()) => raw == [0; FRAME_HEADER_LEN as usize],
        Err(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
    }
}

/// Whether segment `id` ends with a valid seal frame where the next
/// segment's header puts it.
fn has_seal<S: Storage>(storage: &S, path: &Path, id: u64, this: SegMeta, next: SegMeta) -> Result<bool, Error> {
    let io = |e| Error::io(path, e);
    let file = storage.open(path, false).map_err(io)?;
    let len = file.len().map_err(io)?;
    let seal_at = (next.base_pos - this.base_pos).checked_add(SEGMENT_HEADER_LEN - FRAME_HEADER_LEN);
    let Some(seal_at) = seal_at.filter(|&at| at.saturating_add(FRAME_HEADER_LEN) <= len) else {
        return Ok(false);
    };
    let mut raw = [0u8; FRAME_HEADER_LEN as usize];
    file.read_exact_at(&mut raw, seal_at).map_err(io)?;
    Ok(FrameHeader::from_bytes(&raw).is_some_and(|h| {
        h.is_seal() && h.len == 0 && h.seq_lo == next.base_seq as u32 && h.compute_crc(&[], id) == h.crc
    }))
}

/// Checks that an older segment ends with its seal frame where the next
/// segment's header puts it, and fsyncs it. With `trust_seals` (the last
/// close was clean: everything was fsynced) the seal is enough; otherwise
/// the frames are scanned too, since a power loss can keep the page holding
/// the seal and lose an earlier one. If the frames end on a seal elsewhere
/// (a segment an earlier recovery re-sealed), accepts it; if a hole or the
/// missing seal ends them early, seals the segment after its last valid
/// frame.
fn check_seal<S: Storage>(
    storage: &S,
    path: &Path,
    id: u64,
    this: SegMeta,
    next: SegMeta,
    trust_seals: bool,
) -> Result<(), Error> {
    let io = |e| Error::io(path, e);
    let sync = || storage.open(path, false).and_then(|f| f.sync_data()).map_err(io);
    if trust_seals && has_seal(storage, path, id, this, next)? {
        return sync();
    }
    let file = storage.open(path, false).map_err(io)?;
    let len = file.len().map_err(io)?;
    // The seal is not where it should be: find where the valid frames end.
    let map = SegmentMap::sealed(file.map(len, false).map_err(io)?);
    let (end, seq, sealed) = scan(&map, id, this.base_seq);
    drop((map, file));
    // Exactly the right messages, or fewer: a seal with fewer is one an
    // earlier open wrote after a power loss (the gap was logged then), and
    // re-sealing it again at every open would only repeat that.
    if sealed && seq <= next.base_seq {
        return sync();
    }
    if seq > next.base_seq {
        return Err(Error::BadSegment {
            path: path.to_path_buf(),
            reason: format!(
                "holds messages up to sequence {} but the next segment starts at {}",
                seq - 1,
                next.base_seq
            ),
        });
    }
    let file = storage.open(path, true).map_err(io)?;
    tracing::warn!(
        segment = id,
        path = %path.display(),
        offset = end,
        lost = next.base_seq - seq,
        "older segment lost its tail (power loss before it was synced); sealing it after its last valid frame"
    );
    let seal = FrameHeader::new(&[], FLAG_SEAL, seq, id);
    let after = end as u64 + FRAME_HEADER_LEN;
    if after > len {
        return Err(Error::BadSegment {
            path: path.to_path_buf(),
            reason: "no room left to seal the segment after its last valid frame".into(),
        });
    }
    file.write_all_at(&seal.to_bytes(), end as u64).map_err(io)?;
    file.zero_range(after, len - after).map_err(io)?;
    file.sync_data().map_err(io)
}

/// Scans the newest segment, zeroes whatever follows its last valid frame,
/// fsyncs it and returns (write position, next sequence number).
fn reopen_newest<F: StorageFile>(file: &F, path: &Path, id: u64, meta: SegMeta) -> Result<(usize, u64), Error> {
    let io = |e| Error::io(path, e);
    let len = file.len().map_err(io)?;
    let map = SegmentMap::sealed(file.map(len, false).map_err(io)?);
    let (end, seq, _) = scan(&map, id, meta.base_seq);
    let rest = len.saturating_sub(end as u64);
    let tail = map.read(end, rest.min(FRAME_HEADER_LEN) as usize).unwrap_or(&[]);
    if tail.iter().any(|&b| b != 0) {
        tracing::warn!(
            segment = id,
            path = %path.display(),
            offset = end,
            "trimmed a torn, unconfirmed or stale tail from the newest segment"
        );
    }
    drop(map);
    // Zero the whole rest, not just what looks torn: a power loss can persist
    // a later frame without an earlier one, and such a frame must never come
    // back once new frames are written in front of it.
    file.zero_range(end as u64, rest).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok((end, seq))
}

/// Walks valid frames from the start. Returns (end of the last valid frame,
/// next sequence number, whether the walk ended on a seal frame).
fn scan(map: &SegmentMap, id: u64, base_seq: u64) -> (usize, u64, bool) {
    let mut pos = SEGMENT_HEADER_LEN as usize;
    let mut seq = base_seq;
    let seed = segment_seed(id);
    while let Ok(Some(frame)) = read_frame(map, seed, pos, seq) {
        if frame.header.is_seal() {
            return (pos, seq, true);
        }
        pos = frame.next;
        seq += 1;
    }
    (pos, seq, false)
}

/// Creates segment `id` — from `spare` (a consumed segment file kept for
/// reuse, whose pages are likely still cached) when given, else as a new
/// file with its space reserved — writes its header, fsyncs it (in every
/// mode: a spare is renamed only after, so its new name never reaches the
/// disk before its header; a new file's name exists from its creation on,
/// and may reach the disk first, with a directory fsync of GC's: recovery
/// step 2 handles a segment without a valid header) and maps it. With `sync` the directory entry is fsynced too; otherwise the
/// caller must sync the directory before it reports anything in the segment
/// durable. `spare` is emptied once the file is renamed into the segment:
/// after a failure it still names a spare the caller may use again.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &Builder,
    spare: &mut Option<crate::catalog::Spare<S>>,
    id: u64,
    base_seq: u64,
    base_pos: u64,
    first_len: u64,
    sync: bool,
) -> Result<Active<S>, Error> {
    let path = dir.join(segment_file_name(id));
    let header = SegmentHeader { id, base_seq, base_pos }.to_bytes();
    let io = |e| Error::io(&path, e);
    if let Some(s) = spare.take_if(|s| storage.is_mapped(&s.path)) {
        // A second line of defence: the spare's exclusive lock keeps out
        // anyone who takes the shared lock first, as receivers do, so this
        // process cannot map it since GC kept it; what someone maps is never
        // rewritten. A new file is made instead.
        if let Err(e) = storage.remove(&s.path) {
            tracing::warn!(path = %s.path.display(), error = %e, "could not delete a spare segment file that is still mapped");
        }
    }
    let file = match spare.take() {
        Some(s) => {
            // Header first, then the rename: `segment.N` never exists without
            // its own header. Stale frames after it fail their CRC, which
            // covers the segment id. Its blocks are reserved as a fresh
            // segment's are: a spare with holes (a sparse copy of the
            // directory) would meet a full disk as SIGBUS in a store through
            // the map. Once renamed, the spare's exclusive lock goes:
            // whoever locks the file from then on finds this segment's
            // header (receivers check it), and this channel's receivers
            // must lock it to read. A spare whose reuse fails stays locked.
            let f = &s.file;
            let setup = f
                .len()
                .and_then(|len| f.allocate(len))
                .and_then(|()| f.write_all_at(&header, 0))
                .and_then(|()| f.sync_data());
            let failed = match setup {
                Err(e) => Some(Error::io(&s.path, e)),
                Ok(()) => storage.rename(&s.path, &path).err().map(io),
            };
            if let Some(e) = failed {
                // Still a spare, for the caller to use again.
                *spare = Some(s);
                return Err(e);
            }
            if let Err(e) = s.file.unlock() {
                // Renamed but still locked: this channel's receivers could
                // not read the segment. The writer stops (not "disk full").
                return Err(Error::io(&path, io::Error::other(e.to_string())));
            }
            s.file
        }
        None => {
            let f = storage.create_new(&path).map_err(io)?;
            let setup = f
                .allocate(config.segment_capacity(first_len))
                .and_then(|()| f.write_all_at(&header, 0))
                .and_then(|()| f.sync_data());
            if let Err(e) = setup {
                // Leave no half-made segment behind: nothing was written to it.
                // If even that fails, the caller must not carry on as if the
                // disk were merely full: the error is not a disk-full one.
                drop(f);
                if let Err(rm) = storage.remove(&path) {
                    tracing::warn!(path = %path.display(), error = %rm, "could not remove a segment whose creation failed");
                    return Err(io(io::Error::other(format!(
                        "creating the segment failed ({e}) and so did removing it ({rm})"
                    ))));
                }
                return Err(io(e));
            }
            f
        }
    };
    // From here on `segment.N` exists: a failure must stop the writer (it is
    // reported as a plain I/O error, never as "disk full", which would let
    // the writer carry on in the old segment beside the new one).
    let after_creation = |e: io::Error| Error::io(&path, io::Error::other(e.to_string()));
    if sync {
        storage.sync_dir(dir).map_err(after_creation)?;
    }
    let len = file.len().map_err(after_creation)?;
    let map = file.map(len, true).map_err(after_creation)?;
    let (map, writer) = SegmentMap::writable(map, SEGMENT_HEADER_LEN as usize);
    Ok(Active {
        id,
        file: Arc::new(file),
        map,
        writer,
        next_seq: base_seq,
    })
}
