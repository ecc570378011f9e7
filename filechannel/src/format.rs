//! The on-disk format, byte by byte. `DESIGN.md` draws the same layouts; the
//! golden test at the bottom of this file pins them.
//!
//! Every integer is little-endian. Nothing on disk is a `usize`.

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"FCHANSEG";
/// The segment format this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Size of the segment header; frames start right after it.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 64;
/// Size of a frame header; the payload follows it.
pub(crate) const FRAME_HEADER_LEN: u64 = 16;
/// Frames start, and payloads lie, at multiples of this in the file (and so in
/// a page-aligned memory map): enough for any archived rkyv type.
pub(crate) const FRAME_ALIGN: u64 = 16;

/// Set on every frame: an all-zero (pre-allocated, never written) header is
/// therefore never mistaken for a frame.
pub(crate) const FLAG_PRESENT: u8 = 0b0000_0001;
/// The frame that closes a segment; the reader moves on to the next one.
pub(crate) const FLAG_SEAL: u8 = 0b0000_0010;
/// A frame written by a typed sender: its payload starts with the 16-byte
/// typed header (`typed::TYPED_HEADER_LEN`).
pub(crate) const FLAG_TYPED: u8 = 0b0000_0100;
const KNOWN_FLAGS: u8 = FLAG_PRESENT | FLAG_SEAL | FLAG_TYPED;

/// Where a frame CRC starts: the CRC of the id (u64 LE) of the segment the
/// frame is in. Readers and the writer compute it once per segment.
pub(crate) fn segment_seed(segment: u64) -> u32 {
    crc32fast::hash(&segment.to_le_bytes())
}

/// Where the bytes a frame's CRC covers start: right after the CRC, which
/// is the frame's first 4 bytes.
pub(crate) const CRC_COVERED_FROM: usize = 4;

/// A frame's CRC: over the segment id (as `seed`, from [`segment_seed`]),
/// then `parts` in order: header bytes [`CRC_COVERED_FROM`]..16, then the
/// payload. In a segment they lie next to each other, so readers and the
/// writer pass one slice and checksum a frame in one pass.
#[inline]
pub(crate) fn frame_crc(seed: u32, parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(seed);
    for part in parts {
        h.update(part);
    }
    h.finalize()
}

/// Computes the CRC of `frame` (its header and payload, without padding,
/// as they lie in the segment) and stores it in the frame's first 4 bytes.
#[inline]
pub(crate) fn fill_crc(seed: u32, frame: &mut [u8]) {
    let crc = frame_crc(seed, &[&frame[CRC_COVERED_FROM..]]);
    frame[..CRC_COVERED_FROM].copy_from_slice(&crc.to_le_bytes());
}

/// Fills in the CRC of each whole frame at the start of `frames`: frames
/// of segment `seed` ([`segment_seed`]) appended one after another, starting
/// at a frame boundary, with their CRC left at zero
/// ([`FrameHeader::without_crc`]) or already computed (a CRC that is not zero
/// is left as it is; one that happens to be zero is computed again, to the
/// same value). Stops at a seal frame, which the writer finishes itself and
/// publishes only once the next segment is registered. Returns how many
/// bytes of whole frames it passed and the `seq_lo` of the last one.
pub(crate) fn complete_frames(seed: u32, frames: &mut [u8]) -> (usize, Option<u32>) {
    let header = FRAME_HEADER_LEN as usize;
    let mut at = 0;
    let mut last = None;
    while let Some(head) = frames.get(at..at + header) {
        if head[8] & FLAG_SEAL != 0 {
            break;
        }
        let len = u32_at(head, 4) as usize;
        let seq_lo = u32_at(head, 12);
        let Some(frame) = frames.get_mut(at..at + frame_len(len as u64) as usize) else {
            break;
        };
        if u32_at(frame, 0) == 0 {
            fill_crc(seed, &mut frame[..header + len]);
        }
        at += frame.len();
        last = Some(seq_lo);
    }
    (at, last)
}

/// Rounds `n` up to the frame alignment.
pub(crate) const fn align_up(n: u64) -> u64 {
    (n + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// Bytes a frame with a payload of `len` bytes takes in a segment.
pub(crate) const fn frame_len(len: u64) -> u64 {
    FRAME_HEADER_LEN + align_up(len)
}

/// The header at offset 0 of every segment file.
///
/// ```text
/// 0..8    magic "FCHANSEG"
/// 8..12   format version (u32) = 2
/// 12..16  flags (u32), 0 for a plain segment
/// 16..24  segment id (u64), the number in the file name
/// 24..32  base_seq (u64): sequence number of the segment's first message
/// 32..40  base_pos (u64): channel byte position of the segment's first frame
/// 40..60  reserved, zero
/// 60..64  CRC32 of bytes 0..60
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub id: u64,
    pub base_seq: u64,
    pub base_pos: u64,
}

/// Why a segment header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    BadMagic,
    BadChecksum,
    UnknownVersion(u32),
}

impl SegmentHeader {
    pub(crate) fn to_bytes(self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        b[24..32].copy_from_slice(&self.base_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.base_pos.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn from_bytes(b: &[u8; SEGMENT_HEADER_LEN as usize]) -> Result<Self, HeaderProblem> {
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderProblem::BadMagic);
        }
        if crc32fast::hash(&b[0..60]) != u32_at(b, 60) {
            return Err(HeaderProblem::BadChecksum);
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderProblem::UnknownVersion(version));
        }
        Ok(SegmentHeader {
            id: u64_at(b, 16),
            base_seq: u64_at(b, 24),
            base_pos: u64_at(b, 32),
        })
    }
}

/// The 16 bytes in front of every payload.
///
/// ```text
/// 0..4    CRC32 of the segment id (u64) of the file the frame is in, then
///         bytes 4..16, then the payload
/// 4..8    payload length (u32)
/// 8       flags: bit 0 present (always 1), bit 1 seal, bit 2 typed
/// 9..12   reserved, zero
/// 12..16  low 32 bits of the message's sequence number (for a seal frame:
///         of the next message)
/// ```
/// The payload follows at offset 16 and is padded to a multiple of 16 bytes;
/// the writer never writes the padding (zeros in a fresh file, stale bytes in
/// a recycled one), and neither the CRC nor a reader looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub len: u32,
    pub crc: u32,
    pub flags: u8,
    pub seq_lo: u32,
}

impl FrameHeader {
    /// Builds the header for `payload`, computing its CRC.
    pub(crate) fn new(payload: &[u8], flags: u8, seq: u64, segment: u64) -> Self {
        let mut h = Self::without_crc(payload.len(), flags, seq);
        h.crc = h.compute_crc(payload, segment);
        h
    }

    /// The header for a payload of `len` bytes with the CRC left at zero:
    /// the writer fills it in over the frame as copied into the segment
    /// ([`frame_crc`]).
    #[inline]
    pub(crate) fn without_crc(len: usize, flags: u8, seq: u64) -> Self {
        FrameHeader {
            // The caller has checked the size against `max_message_size`,
            // which the builder bounds below `u32::MAX`.
            len: len as u32,
            crc: 0,
            flags: flags | FLAG_PRESENT,
            seq_lo: seq as u32,
        }
    }

    pub(crate) fn to_bytes(self) -> [u8; FRAME_HEADER_LEN as usize] {
        let mut b = [0u8; FRAME_HEADER_LEN as usize];
        b[0..4].copy_from_slice(&self.crc.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8] = self.flags;
        b[12..16].copy_from_slice(&self.seq_lo.to_le_bytes());
        b
    }

    /// Parses a header; `None` when it cannot be a frame header at all
    /// (never written, unknown flags or non-zero reserved bytes).
    pub(crate) fn from_bytes(b: &[u8; FRAME_HEADER_LEN as usize]) -> Option<Self> {
        let flags = b[8];
        if flags & FLAG_PRESENT == 0 || flags & !KNOWN_FLAGS != 0 || b[9..12] != [0, 0, 0] {
            return None;
        }
        Some(FrameHeader {
            crc: u32_at(b, 0),
            len: u32_at(b, 4),
            flags,
            seq_lo: u32_at(b, 12),
        })
    }

    /// The CRC this header should carry for `payload` in segment `segment`
    /// (the same value as [`frame_crc`] over the frame in place; for frames
    /// not in a segment yet). The segment id, which is not stored in the
    /// frame, is covered so that a stale frame left in a recycled segment
    /// file never checks out in its new segment.
    pub(crate) fn compute_crc(&self, payload: &[u8], segment: u64) -> u32 {
        frame_crc(segment_seed(segment), &[&self.to_bytes()[CRC_COVERED_FROM..], payload])
    }

    pub(crate) fn is_seal(&self) -> bool {
        self.flags & FLAG_SEAL != 0
    }

    #[inline]
    pub(crate) fn is_typed(&self) -> bool {
        self.flags & FLAG_TYPED != 0
    }

    /// Bytes the whole frame occupies.
    pub(crate) fn frame_len(&self) -> u64 {
        frame_len(u64::from(self.len))
    }
}

/// One slot of the `head` file, which records how far every receiver has
/// consumed (the lowest sequence number a new receiver must still see).
/// The file holds two slots; writes alternate between them so a torn write
/// leaves the other intact, and the valid slot with the higher generation wins.
///
/// ```text
/// 0..4    magic "FCHD"
/// 4..8    version (u32) = 1
/// 8..16   generation (u64), +1 per write
/// 16..24  head_seq (u64)
/// 24..28  flags (u32): bit 0 clean (written by a close with everything
///         fsynced); other bits zero
/// 28..32  CRC32 of bytes 0..28
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadSlot {
    pub generation: u64,
    pub head_seq: u64,
    /// Written by `close` after everything was fsynced: no segment can have
    /// lost pages, so the next open may trust every older segment's seal
    /// without scanning its frames.
    pub clean: bool,
}

/// Bit 0 of a head slot's flags: [`HeadSlot::clean`].
const HEAD_FLAG_CLEAN: u32 = 1;

pub(crate) const HEAD_MAGIC: [u8; 4] = *b"FCHD";
pub(crate) const HEAD_SLOT_LEN: u64 = 32;

impl HeadSlot {
    pub(crate) fn to_bytes(self) -> [u8; HEAD_SLOT_LEN as usize] {
        let mut b = [0u8; HEAD_SLOT_LEN as usize];
        b[0..4].copy_from_slice(&HEAD_MAGIC);
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.head_seq.to_le_bytes());
        let flags = if self.clean { HEAD_FLAG_CLEAN } else { 0 };
        b[24..28].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn from_bytes(b: &[u8; HEAD_SLOT_LEN as usize]) -> Option<Self> {
        if b[0..4] != HEAD_MAGIC || u32_at(b, 4) != 1 || crc32fast::hash(&b[0..28]) != u32_at(b, 28) {
            return None;
        }
        Some(HeadSlot {
            generation: u64_at(b, 8),
            head_seq: u64_at(b, 16),
            clean: u32_at(b, 24) & HEAD_FLAG_CLEAN != 0,
        })
    }
}

/// The file name of segment `id`: `segment.` and 20 decimal digits, so that
/// names sort in id order.
pub(crate) fn segment_file_name(id: u64) -> String {
    format!("segment.{id:020}")
}

/// The id in a segment file name, or `None` for any other file.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("segment.")?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name of compressed segment `id`.
pub(crate) fn compressed_file_name(id: u64) -> String {
    format!("segment.{id:020}.z")
}

/// The id in a compressed segment's file name (`segment.N.z`).
pub(crate) fn parse_compressed_file_name(name: &str) -> Option<u64> {
    parse_segment_file_name(name.strip_suffix(".z")?)
}

/// The id in the name of a compressed segment being written
/// (`segment.N.z.tmp`): such a file is never part of the channel.
pub(crate) fn parse_compressing_file_name(name: &str) -> Option<u64> {
    parse_compressed_file_name(name.strip_suffix(".tmp")?)
}

/// Whether `name` is a spare: a consumed segment file kept for reuse
/// (`spare.` and 20 digits).
pub(crate) fn parse_spare_file_name(name: &str) -> bool {
    name.strip_prefix("spare.")
        .is_some_and(|d| d.len() == 20 && d.bytes().all(|c| c.is_ascii_digit()))
}

/// The file name a consumed segment `id` gets while it waits for reuse.
pub(crate) fn spare_file_name(id: u64) -> String {
    format!("spare.{id:020}")
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the byte layout: changing it must be a deliberate format bump.
    #[test]
    fn golden_segment_header_bytes() {
        let h = SegmentHeader {
            id: 7,
            base_seq: 0x0102,
            base_pos: 0x0a0b0c,
        };
        let b = h.to_bytes();
        let mut expected = [0u8; 64];
        expected[0..8].copy_from_slice(b"FCHANSEG");
        expected[8] = 2;
        expected[16] = 7;
        expected[24] = 0x02;
        expected[25] = 0x01;
        expected[32] = 0x0c;
        expected[33] = 0x0b;
        expected[34] = 0x0a;
        let crc = crc32fast::hash(&expected[0..60]);
        expected[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(b, expected);
        assert_eq!(crc, 0xff29_03fb, "segment header CRC changed: the format changed");
        assert_eq!(SegmentHeader::from_bytes(&b), Ok(h));
    }

    #[test]
    fn golden_frame_bytes() {
        let h = FrameHeader::new(b"hello", 0, 3, 7);
        assert_eq!(
            h.to_bytes(),
            [112, 170, 24, 199, 5, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0],
            "frame header bytes changed: the format changed"
        );
        assert_eq!(FrameHeader::from_bytes(&h.to_bytes()), Some(h));
        assert_eq!(h.compute_crc(b"hello", 7), h.crc);
        assert_ne!(h.compute_crc(b"hellp", 7), h.crc);
        assert_ne!(h.compute_crc(b"hello", 8), h.crc, "the segment id is covered");
        // In place: one pass over header bytes 4..16 and the payload, seeded
        // with the segment id, is the same CRC as over the id and then them.
        let mut frame = h.to_bytes().to_vec();
        frame.extend_from_slice(b"hello");
        assert_eq!(frame_crc(segment_seed(7), &[&frame[CRC_COVERED_FROM..]]), h.crc);
        let mut plain = 7u64.to_le_bytes().to_vec();
        plain.extend_from_slice(&frame[CRC_COVERED_FROM..]);
        assert_eq!(crc32fast::hash(&plain), h.crc);
        assert_eq!(h.frame_len(), 32);
    }

    #[test]
    fn zeroed_header_is_not_a_frame() {
        assert_eq!(FrameHeader::from_bytes(&[0; 16]), None);
    }

    #[test]
    fn header_refuses_unknown_version_and_bad_crc() {
        let mut b = SegmentHeader {
            id: 1,
            base_seq: 0,
            base_pos: 0,
        }
        .to_bytes();
        b[8] = 1;
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentHeader::from_bytes(&b), Err(HeaderProblem::UnknownVersion(1)));
        b[20] ^= 1;
        assert_eq!(SegmentHeader::from_bytes(&b), Err(HeaderProblem::BadChecksum));
        b[0] = b'X';
        assert_eq!(SegmentHeader::from_bytes(&b), Err(HeaderProblem::BadMagic));
    }

    #[test]
    fn head_slot_round_trips_and_rejects_torn_slot() {
        for clean in [false, true] {
            let s = HeadSlot {
                generation: 9,
                head_seq: 1234,
                clean,
            };
            let mut b = s.to_bytes();
            assert_eq!(HeadSlot::from_bytes(&b), Some(s));
            assert_eq!(b[24], u8::from(clean));
            b[17] ^= 0x40;
            assert_eq!(HeadSlot::from_bytes(&b), None);
        }
    }

    #[test]
    fn segment_names_sort_and_parse() {
        assert_eq!(segment_file_name(42), "segment.00000000000000000042");
        assert_eq!(parse_segment_file_name("segment.00000000000000000042"), Some(42));
        assert_eq!(parse_segment_file_name("segment.42"), None);
        assert_eq!(parse_segment_file_name("segment.0000000000000000004x"), None);
        assert_eq!(parse_segment_file_name("notes.txt"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }

    #[test]
    fn frames_keep_payloads_aligned() {
        for len in 0..100u64 {
            assert_eq!(frame_len(len) % FRAME_ALIGN, 0);
            assert!(frame_len(len) >= FRAME_HEADER_LEN + len);
        }
        assert_eq!(SEGMENT_HEADER_LEN % FRAME_ALIGN, 0);
    }
}
