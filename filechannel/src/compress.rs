//! Compression of sealed segments: the methods, and the compressed segment
//! file (`segment.N.z`): a header, then the compressed bytes of the plain
//! segment file from its start to the end of its seal frame. Decompressed, a
//! segment is byte for byte the plain file, so receivers read it the same way.

use crate::format::{u32_at, u64_at};
use std::io::{self, Read, Write};

/// How sealed segments are compressed on disk.
///
/// The method is per channel directory: reopening with another method keeps
/// reading segments compressed with the old one and compresses new ones with
/// the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Sealed segments stay plain.
    None,
    /// Snappy (`snap`): fast, moderate ratio. The default, as in the Go
    /// library.
    #[default]
    Snappy,
    /// Gzip (`flate2`), level 0–9 (default 6).
    Gzip,
    /// Zstandard (`zstd`), level 1–22 (default 3).
    Zstd,
}

impl Compression {
    /// The id stored in a compressed segment's header.
    pub(crate) fn id(self) -> u32 {
        match self {
            Compression::None => 0,
            Compression::Snappy => 1,
            Compression::Gzip => 2,
            Compression::Zstd => 3,
        }
    }

    pub(crate) fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            1 => Compression::Snappy,
            2 => Compression::Gzip,
            3 => Compression::Zstd,
            _ => return None,
        })
    }

    /// Whether `level` is valid for this method.
    pub(crate) fn check_level(self, level: i32) -> Result<(), String> {
        let range = match self {
            Compression::Gzip => 0..=9,
            Compression::Zstd => 1..=22,
            Compression::None | Compression::Snappy => return Ok(()),
        };
        if range.contains(&level) {
            Ok(())
        } else {
            Err(format!("compression level {level} is outside {range:?} for {self:?}"))
        }
    }

    /// Compresses `data`.
    pub(crate) fn compress(self, level: Option<i32>, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(data.to_vec()),
            Compression::Snappy => snap::raw::Encoder::new().compress_vec(data).map_err(io::Error::other),
            Compression::Gzip => {
                let level = level.map_or(6, |l| l.clamp(0, 9) as u32);
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                enc.write_all(data)?;
                enc.finish()
            }
            Compression::Zstd => zstd::bulk::compress(data, level.unwrap_or(3)),
        }
    }

    /// Decompresses `body` into `out`, which must come out exactly full.
    pub(crate) fn decompress_into(self, body: &[u8], out: &mut [u8]) -> io::Result<()> {
        let n = match self {
            Compression::None => {
                if body.len() != out.len() {
                    return Err(io::Error::other("stored body has the wrong length"));
                }
                out.copy_from_slice(body);
                body.len()
            }
            Compression::Snappy => snap::raw::Decoder::new()
                .decompress(body, out)
                .map_err(io::Error::other)?,
            Compression::Gzip => {
                let mut dec = flate2::read::GzDecoder::new(body);
                dec.read_exact(out)?;
                // Nothing may follow.
                if dec.read(&mut [0u8; 1])? != 0 {
                    return Err(io::Error::other("gzip body is longer than recorded"));
                }
                out.len()
            }
            Compression::Zstd => zstd::bulk::Decompressor::new()?.decompress_to_buffer(body, out)?,
        };
        if n != out.len() {
            return Err(io::Error::other(format!(
                "decompressed {n} bytes, expected {}",
                out.len()
            )));
        }
        Ok(())
    }
}

/// First bytes of a compressed segment file.
pub(crate) const COMPRESSED_MAGIC: [u8; 8] = *b"FCHANZSG";
/// Length of a compressed segment's header.
pub(crate) const COMPRESSED_HEADER_LEN: usize = 96;

/// The header of a compressed segment file.
///
/// ```text
/// 0..8    magic "FCHANZSG"
/// 8..12   format version (u32) = 1
/// 12..16  method (u32): 1 Snappy, 2 Gzip, 3 Zstd
/// 16..24  segment id (u64)
/// 24..32  base_seq (u64): sequence number of the first message
/// 32..40  base_pos (u64): channel byte position of the first frame
/// 40..48  end_seq (u64): sequence number after the last message
/// 48..56  message count (u64) = end_seq - base_seq
/// 56..64  plain_len (u64): bytes of the plain segment that were compressed
/// 64..72  body_len (u64): bytes of compressed body after this header
/// 72..76  CRC32 of the body
/// 76..92  reserved, zero
/// 92..96  CRC32 of bytes 0..92
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompressedHeader {
    pub method: Compression,
    pub id: u64,
    pub base_seq: u64,
    pub base_pos: u64,
    pub end_seq: u64,
    pub plain_len: u64,
    pub body_len: u64,
    pub body_crc: u32,
}

impl CompressedHeader {
    pub(crate) fn to_bytes(self) -> [u8; COMPRESSED_HEADER_LEN] {
        let mut b = [0u8; COMPRESSED_HEADER_LEN];
        b[0..8].copy_from_slice(&COMPRESSED_MAGIC);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&self.method.id().to_le_bytes());
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        b[24..32].copy_from_slice(&self.base_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.base_pos.to_le_bytes());
        b[40..48].copy_from_slice(&self.end_seq.to_le_bytes());
        b[48..56].copy_from_slice(&(self.end_seq - self.base_seq).to_le_bytes());
        b[56..64].copy_from_slice(&self.plain_len.to_le_bytes());
        b[64..72].copy_from_slice(&self.body_len.to_le_bytes());
        b[72..76].copy_from_slice(&self.body_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[0..92]);
        b[92..96].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a header; the error says what is wrong.
    pub(crate) fn from_bytes(b: &[u8; COMPRESSED_HEADER_LEN]) -> Result<Self, String> {
        if b[0..8] != COMPRESSED_MAGIC {
            return Err("not a compressed filechannel segment (bad magic number)".into());
        }
        if crc32fast::hash(&b[0..92]) != u32_at(b, 92) {
            return Err("compressed segment header checksum mismatch".into());
        }
        let version = u32_at(b, 8);
        if version != 1 {
            return Err(format!(
                "compressed segment format version {version} is not supported (this build reads 1)"
            ));
        }
        let method = u32_at(b, 12);
        let method = Compression::from_id(method).ok_or_else(|| format!("unknown compression method {method}"))?;
        let h = CompressedHeader {
            method,
            id: u64_at(b, 16),
            base_seq: u64_at(b, 24),
            base_pos: u64_at(b, 32),
            end_seq: u64_at(b, 40),
            plain_len: u64_at(b, 56),
            body_len: u64_at(b, 64),
            body_crc: u32_at(b, 72),
        };
        if h.end_seq < h.base_seq || u64_at(b, 48) != h.end_seq - h.base_seq {
            return Err("compressed segment header has inconsistent message counts".into());
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        for m in [Compression::Snappy, Compression::Gzip, Compression::Zstd] {
            let body = m.compress(None, &data).unwrap();
            assert!(body.len() < data.len() / 2, "{m:?} should compress JSON lines");
            let mut out = vec![0u8; data.len()];
            m.decompress_into(&body, &mut out).unwrap();
            assert_eq!(out, data, "{m:?}");
            let mut short = vec![0u8; data.len() + 1];
            assert!(
                m.decompress_into(&body, &mut short).is_err(),
                "{m:?} must notice a wrong length"
            );
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = CompressedHeader {
            method: Compression::Zstd,
            id: 4,
            base_seq: 10,
            base_pos: 999,
            end_seq: 15,
            plain_len: 4096,
            body_len: 100,
            body_crc: 0xdead_beef,
        };
        let mut b = h.to_bytes();
        assert_eq!(CompressedHeader::from_bytes(&b), Ok(h));
        b[30] ^= 1;
        assert!(CompressedHeader::from_bytes(&b).is_err());
    }

    /// The process's peak resident memory in KiB.
    fn peak_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn a_header_claiming_a_huge_segment_is_refused_without_using_the_memory() {
        // A CRC-valid header whose plain length (8 GiB) the body does not
        // decompress to: an error, and the 8 GiB buffer is never touched
        // (it used to be zero-filled before decompressing).
        let dir = tempfile::tempdir().unwrap();
        let plain_len = 8u64 << 30;
        let before = peak_rss_kib();
        for m in [Compression::Snappy, Compression::Gzip, Compression::Zstd] {
            let body = m.compress(None, &[7u8; 4096]).unwrap();
            let header = CompressedHeader {
                method: m,
                id: 2,
                base_seq: 0,
                base_pos: 0,
                end_seq: 1,
                plain_len,
                body_len: body.len() as u64,
                body_crc: crc32fast::hash(&body),
            };
            let path = dir.path().join(format!("{m:?}.z"));
            let mut file = header.to_bytes().to_vec();
            file.extend_from_slice(&body);
            std::fs::write(&path, file).unwrap();
            let expected = Packed {
                method: m,
                plain_len,
                file_len: 0,
            };
            let err = load_compressed(&crate::storage::Fs, &path, expected).unwrap_err();
            // Either the lazy allocation is refused or the length check fails.
            assert!(
                err.contains("decompress") || err.contains("cannot allocate"),
                "{m:?}: {err}"
            );
        }
        let grown = peak_rss_kib().saturating_sub(before);
        assert!(grown < 1 << 20, "peak memory grew by {grown} KiB");
    }
}

/// What the catalog keeps about a compressed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Packed {
    pub method: Compression,
    /// Bytes of the plain segment it holds.
    pub plain_len: u64,
    /// Bytes of the compressed file.
    pub file_len: u64,
}

/// Reads and checks a compressed segment file: its header and the CRC of its
/// body. Returns the header and the body's bytes.
pub(crate) fn read_compressed<S: crate::storage::Storage>(
    storage: &S,
    path: &std::path::Path,
) -> Result<(CompressedHeader, Vec<u8>), String> {
    use crate::storage::StorageFile;
    let file = storage.open(path, false).map_err(|e| e.to_string())?;
    let len = file.len().map_err(|e| e.to_string())?;
    if len < COMPRESSED_HEADER_LEN as u64 {
        return Err(format!(
            "the file is {len} bytes, shorter than a compressed segment header"
        ));
    }
    let mut raw = [0u8; COMPRESSED_HEADER_LEN];
    file.read_exact_at(&mut raw, 0).map_err(|e| e.to_string())?;
    let header = CompressedHeader::from_bytes(&raw)?;
    if Some(len) != header.body_len.checked_add(COMPRESSED_HEADER_LEN as u64) {
        return Err(format!(
            "the file is {len} bytes but its header records a body of {} bytes (incomplete)",
            header.body_len
        ));
    }
    let body_len = usize::try_from(header.body_len).map_err(|_| "body too large for this machine".to_string())?;
    let mut body = Vec::new();
    body.try_reserve_exact(body_len)
        .map_err(|_| format!("cannot allocate {body_len} bytes"))?;
    body.resize(body_len, 0);
    file.read_exact_at(&mut body, COMPRESSED_HEADER_LEN as u64)
        .map_err(|e| e.to_string())?;
    if crc32fast::hash(&body) != header.body_crc {
        return Err("compressed body checksum mismatch".into());
    }
    Ok((header, body))
}

/// Loads a compressed segment for reading: checks it, then decompresses it
/// into a 16-byte aligned buffer that receivers read like a mapped file.
pub(crate) fn load_compressed<S: crate::storage::Storage>(
    storage: &S,
    path: &std::path::Path,
    expected: Packed,
) -> Result<std::sync::Arc<crate::storage::SegmentMap>, String> {
    let (header, body) = read_compressed(storage, path)?;
    if header.plain_len != expected.plain_len {
        // Open checked the length against the next segment; the file changed.
        return Err("the header's segment length changed since the channel was opened".into());
    }
    let plain_len = usize::try_from(header.plain_len).map_err(|_| "segment too large for this machine".to_string())?;
    let mut buf = crate::storage::HeapMap::zeroed(plain_len).map_err(|e| e.to_string())?;
    header
        .method
        .decompress_into(&body, buf.as_mut_slice())
        .map_err(|e| format!("compressed body does not decompress: {e}"))?;
    Ok(crate::storage::SegmentMap::sealed(buf))
}
