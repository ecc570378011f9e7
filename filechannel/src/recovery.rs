//! Opening a directory: find the segments, check that they form one unbroken
//! chain, repair what a crash can leave behind, and hand the newest segment
//! to the writer.
//!
//! What a crash can leave, and what happens to it:
//! - a torn or partly persisted tail in the newest segment: the valid frames
//!   are kept, everything after them is zeroed (so a stale frame can never
//!   resurface after new writes) and the trimmed offset is logged;
//! - an older segment whose seal frame did not reach the disk (power loss in
//!   a non-`Sync` mode): its valid frames are kept and a seal is written after
//!   them; lost unconfirmed messages are logged as a gap in sequence numbers;
//! - a newest segment whose header never reached the disk (a crash while it
//!   was being created; it holds no message): removed.
//!
//! Anything else that does not parse is an error naming the file; nothing is
//! guessed and nothing else is deleted.

use crate::config::Builder;
use crate::error::Error;
use crate::format::{
    FORMAT_VERSION, FRAME_HEADER_LEN, FrameHeader, HeaderProblem, SEGMENT_HEADER_LEN,
    SegmentHeader, parse_segment_file_name, segment_file_name,
};
use crate::segment::{SegMeta, read_frame};
use crate::storage::{SegmentMap, Storage, StorageFile};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The newest segment, ready for the writer.
pub(crate) struct Active<S: Storage> {
    pub id: u64,
    pub file: Arc<S::File>,
    pub map: Arc<SegmentMap<<S::File as StorageFile>::Map>>,
    pub writer: crate::storage::MapWriterOf<S>,
    pub next_seq: u64,
}

pub(crate) struct Recovered<S: Storage> {
    pub segments: BTreeMap<u64, SegMeta>,
    pub active: Active<S>,
}

/// Recovers the channel in `dir` (already locked by the caller).
pub(crate) fn recover<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &Builder,
) -> Result<Recovered<S>, Error> {
    let names = storage.list(dir).map_err(|e| Error::io(dir, e))?;
    let mut ids: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    ids.sort_unstable();
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
    // anything is changed.
    let mut segments = BTreeMap::new();
    // Files are opened one at a time: a long channel must not need a
    // descriptor per segment.
    let mut files = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        let path = dir.join(segment_file_name(id));
        let newest = i + 1 == ids.len();
        let file = storage
            .open(&path, false)
            .map_err(|e| Error::io(&path, e))?;
        let header = match read_header(&file, &path, id)? {
            Some(h) => h,
            None if newest => {
                tracing::warn!(path = %path.display(), "removing a segment whose creation was interrupted (no header, no messages)");
                drop(file);
                storage.remove(&path).map_err(|e| Error::io(&path, e))?;
                storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
                continue;
            }
            None => {
                return Err(Error::BadSegment {
                    path,
                    reason: "the segment header is missing (all zeros)".into(),
                });
            }
        };
        if let Some((_, prev)) = segments.last_key_value() {
            let prev: &SegMeta = prev;
            if header.base_seq < prev.base_seq || header.base_pos <= prev.base_pos {
                return Err(Error::BadSegment {
                    path,
                    reason: "the header's sequence number or position goes backwards from the previous segment".into(),
                });
            }
        }
        segments.insert(
            id,
            SegMeta {
                base_seq: header.base_seq,
                base_pos: header.base_pos,
            },
        );
        files.push((id, path));
    }

    // Older segments must end with a seal frame where the next header says.
    for pair in files.windows(2) {
        let ((id, path), (next_id, _)) = (&pair[0], &pair[1]);
        let (this, next) = (segments[id], segments[next_id]);
        check_seal(storage, path, *id, this, next)?;
    }

    let Some((id, path)) = files.pop() else {
        let active = create_segment(storage, dir, config, 1, 0, 0, 0)?;
        segments.insert(
            1,
            SegMeta {
                base_seq: 0,
                base_pos: 0,
            },
        );
        return Ok(Recovered { segments, active });
    };
    let meta = segments[&id];
    let file = storage.open(&path, true).map_err(|e| Error::io(&path, e))?;
    let active = reopen_newest(&file, &path, id, meta)?;
    let file = Arc::new(file);
    let len = file.len().map_err(|e| Error::io(&path, e))?;
    // Re-reserve in case the file was shrunk or holes were punched by hand.
    file.allocate(len).map_err(|e| Error::io(&path, e))?;
    let map = file.map(len, true).map_err(|e| Error::io(&path, e))?;
    let (map, writer) = SegmentMap::writable(map, active.0);
    Ok(Recovered {
        segments,
        active: Active {
            id,
            file,
            map,
            writer,
            next_seq: active.1,
        },
    })
}

/// Reads and checks a segment header. `Ok(None)`: the file is shorter than a
/// header or the header is all zeros (never written).
fn read_header<F: StorageFile>(
    file: &F,
    path: &Path,
    id: u64,
) -> Result<Option<SegmentHeader>, Error> {
    let len = file.len().map_err(|e| Error::io(path, e))?;
    if len < SEGMENT_HEADER_LEN {
        return Ok(None);
    }
    let mut raw = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut raw, 0)
        .map_err(|e| Error::io(path, e))?;
    if raw == [0; SEGMENT_HEADER_LEN as usize] {
        return Ok(None);
    }
    let header = SegmentHeader::from_bytes(&raw).map_err(|p| match p {
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
            reason: format!(
                "header says segment {} but the file name says {id}",
                header.id
            ),
        });
    }
    Ok(Some(header))
}

/// Checks that an older segment ends with its seal frame where the next
/// segment's header puts it; if the seal (or more) was lost, seals the segment
/// after its last valid frame.
fn check_seal<S: Storage>(
    storage: &S,
    path: &Path,
    id: u64,
    this: SegMeta,
    next: SegMeta,
) -> Result<(), Error> {
    let file = storage.open(path, false).map_err(|e| Error::io(path, e))?;
    let len = file.len().map_err(|e| Error::io(path, e))?;
    let seal_at =
        (next.base_pos - this.base_pos + SEGMENT_HEADER_LEN).checked_sub(FRAME_HEADER_LEN);
    if let Some(seal_at) = seal_at.filter(|&at| at + FRAME_HEADER_LEN <= len) {
        let mut raw = [0u8; FRAME_HEADER_LEN as usize];
        file.read_exact_at(&mut raw, seal_at)
            .map_err(|e| Error::io(path, e))?;
        if let Some(h) = FrameHeader::from_bytes(&raw)
            && h.is_seal()
            && h.len == 0
            && h.seq_lo == next.base_seq as u32
            && h.compute_crc(&[]) == h.crc
        {
            return Ok(());
        }
    }
    // The seal is not where it should be: find where the valid frames end.
    let map = SegmentMap::sealed(file.map(len, false).map_err(|e| Error::io(path, e))?);
    let (end, seq, sealed) = scan(&map, this.base_seq);
    if sealed {
        // A seal after fewer bytes than the next header expects: the next
        // header is what is off. Accept the seal; the reader checks the
        // sequence numbers when it moves on.
        return Ok(());
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
    drop((map, file));
    let file = storage.open(path, true).map_err(|e| Error::io(path, e))?;
    tracing::warn!(
        segment = id,
        path = %path.display(),
        offset = end,
        lost = next.base_seq - seq,
        "older segment lost its tail (power loss before it was synced); sealing it after its last valid frame"
    );
    let seal = FrameHeader::new(&[], crate::format::FLAG_SEAL, seq);
    file.write_all_at(&seal.to_bytes(), end as u64)
        .map_err(|e| Error::io(path, e))?;
    file.zero_range(
        end as u64 + FRAME_HEADER_LEN,
        len - end as u64 - FRAME_HEADER_LEN,
    )
    .map_err(|e| Error::io(path, e))?;
    file.sync_data().map_err(|e| Error::io(path, e))
}

/// Scans the newest segment, zeroes whatever follows its last valid frame and
/// returns (write position, next sequence number).
fn reopen_newest<F: StorageFile>(
    file: &F,
    path: &Path,
    id: u64,
    meta: SegMeta,
) -> Result<(usize, u64), Error> {
    let len = file.len().map_err(|e| Error::io(path, e))?;
    let map = SegmentMap::sealed(file.map(len, false).map_err(|e| Error::io(path, e))?);
    let (end, seq, _) = scan(&map, meta.base_seq);
    let tail = map
        .read(end, (len as usize - end).min(FRAME_HEADER_LEN as usize))
        .unwrap_or(&[]);
    let torn = tail.iter().any(|&b| b != 0);
    drop(map);
    if torn {
        tracing::warn!(
            segment = id,
            path = %path.display(),
            offset = end,
            trimmed_bytes = len - end as u64,
            "trimmed a torn or unconfirmed tail from the newest segment"
        );
    }
    // Zero the whole rest, not just what looks torn: a power loss can persist
    // a later frame without an earlier one, and such a frame must never come
    // back once new frames are written in front of it.
    file.zero_range(end as u64, len - end as u64)
        .map_err(|e| Error::io(path, e))?;
    file.sync_data().map_err(|e| Error::io(path, e))?;
    Ok((end, seq))
}

/// Walks valid frames from the start. Returns (end of the last valid frame,
/// next sequence number, whether the walk ended on a seal frame).
fn scan<M: crate::storage::StorageMap>(map: &SegmentMap<M>, base_seq: u64) -> (usize, u64, bool) {
    let mut pos = SEGMENT_HEADER_LEN as usize;
    let mut seq = base_seq;
    while let Ok(Some(frame)) = read_frame(map, pos, seq) {
        if frame.header.is_seal() {
            return (pos, seq, true);
        }
        pos = frame.next;
        seq += 1;
    }
    (pos, seq, false)
}

/// Creates, reserves and maps a new segment; writes and (with `sync`) syncs
/// its header. The caller syncs the directory.
pub(crate) fn create_segment<S: Storage>(
    storage: &S,
    dir: &Path,
    config: &Builder,
    id: u64,
    base_seq: u64,
    base_pos: u64,
    first_len: u64,
) -> Result<Active<S>, Error> {
    let path = dir.join(segment_file_name(id));
    let file = storage.create_new(&path).map_err(|e| Error::io(&path, e))?;
    let capacity = config.segment_capacity(first_len);
    let setup = || -> std::io::Result<_> {
        file.allocate(capacity)?;
        let header = SegmentHeader {
            id,
            base_seq,
            base_pos,
        };
        file.write_all_at(&header.to_bytes(), 0)?;
        file.map(capacity, true)
    };
    match setup() {
        Ok(map) => {
            let (map, writer) = SegmentMap::writable(map, SEGMENT_HEADER_LEN as usize);
            Ok(Active {
                id,
                file: Arc::new(file),
                map,
                writer,
                next_seq: base_seq,
            })
        }
        Err(e) => {
            // Leave no half-made segment behind: nothing was written to it.
            drop(file);
            if let Err(rm) = storage.remove(&path) {
                tracing::warn!(path = %path.display(), error = %rm, "could not remove a segment whose creation failed");
            }
            Err(Error::io(&path, e))
        }
    }
}
