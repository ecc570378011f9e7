//! Reading frames out of a mapped segment, shared by receivers and recovery.

use crate::format::{CRC_COVERED_FROM, FRAME_HEADER_LEN, FrameHeader, frame_crc};
use crate::storage::SegmentMap;

/// What the channel keeps in memory about a retained segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegMeta {
    /// Sequence number of the segment's first message.
    pub base_seq: u64,
    /// Channel byte position of its first frame.
    pub base_pos: u64,
    /// Set once the segment lives in a compressed file.
    pub packed: Option<crate::compress::Packed>,
}

/// A frame found at some position.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    pub header: FrameHeader,
    /// Where the payload starts in the file.
    pub payload_at: usize,
    /// Where the next frame starts.
    pub next: usize,
}

/// Reads and checks the frame at `pos` of the segment whose
/// [`segment_seed`](crate::format::segment_seed) is `seed`; it should carry
/// sequence number `seq`. `Ok(None)` when the bytes there are not
/// published yet (or the map ends). `Err(reason)` when they are, but are not
/// a valid frame.
#[inline]
pub(crate) fn read_frame(map: &SegmentMap, seed: u32, pos: usize, seq: u64) -> Result<Option<Frame>, &'static str> {
    // One look at the published mark; everything below is plain slicing.
    let bytes = map.published_bytes();
    let Some(hdr) = bytes.get(pos..pos + FRAME_HEADER_LEN as usize) else {
        return Ok(None);
    };
    let mut raw = [0u8; FRAME_HEADER_LEN as usize];
    raw.copy_from_slice(hdr);
    let Some(header) = FrameHeader::from_bytes(&raw) else {
        return Err(if raw == [0; FRAME_HEADER_LEN as usize] {
            "no frame where one should be (zeroed bytes)"
        } else {
            "frame header does not parse"
        });
    };
    let payload_at = pos + FRAME_HEADER_LEN as usize;
    // The writer publishes whole frames (padding included), so a frame
    // running past what is published runs past the file: damaged.
    let next = pos + header.frame_len() as usize;
    // The rest of the header and the payload: what the CRC covers, in one
    // pass.
    let Some(covered) = bytes
        .get(pos + CRC_COVERED_FROM..payload_at + header.len as usize)
        .filter(|_| next <= bytes.len())
    else {
        return Err("frame length runs past the end of the segment");
    };
    if header.seq_lo != seq as u32 {
        return Err("frame is out of sequence (a stale or misplaced frame)");
    }
    if frame_crc(seed, &[covered]) != header.crc {
        return Err("checksum mismatch");
    }
    Ok(Some(Frame {
        header,
        payload_at,
        next,
    }))
}
