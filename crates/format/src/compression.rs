//! Per-chunk codecs.
//!
//! Each chunk is compressed on its own so that any chunk can be fetched and
//! decoded alone. A chunk that does not shrink is stored raw.

use crate::error::{FormatError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    #[default]
    Zstd = 1,
    Lz4 = 2,
}

impl Compression {
    pub fn from_u8(v: u8) -> Result<Self> {
        match v {
            0 => Ok(Self::None),
            1 => Ok(Self::Zstd),
            2 => Ok(Self::Lz4),
            other => Err(FormatError::UnknownCompression(other)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Zstd => "zstd",
            Self::Lz4 => "lz4",
        }
    }
}

/// A codec choice with its level, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    pub compression: Compression,
    /// zstd level (1..=19); ignored by the other codecs.
    pub level: i32,
}

/// zstd level 2 is the default: 1.5% larger than level 3 on the Debian test
/// image and about 15% faster to convert, which keeps conversion above
/// 250 MB/s on 2 cores (docs/benchmarks.md). Archives may prefer more.
pub const DEFAULT_ZSTD_LEVEL: i32 = 2;

impl Default for Codec {
    fn default() -> Self {
        Self {
            compression: Compression::Zstd,
            level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

impl Codec {
    /// Parses `zstd`, `zstd:LEVEL`, `lz4` or `none`.
    pub fn parse(s: &str) -> Option<Self> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l.parse::<i32>().ok()?)),
            None => (s, None),
        };
        let compression = match name {
            "zstd" => Compression::Zstd,
            "lz4" => Compression::Lz4,
            "none" => Compression::None,
            _ => return None,
        };
        let level = match (compression, level) {
            (Compression::Zstd, Some(l)) if (1..=19).contains(&l) => l,
            (Compression::Zstd, Some(_)) => return None,
            (_, Some(_)) => return None,
            (_, None) => Self::default().level,
        };
        Some(Self { compression, level })
    }

    /// Compresses one chunk. Returns the codec actually used: `None` when
    /// compression would not save space.
    pub fn compress(&self, data: &[u8]) -> (Compression, Vec<u8>) {
        let packed = match self.compression {
            Compression::None => None,
            // Writing into a Vec cannot fail; zstd only errors on bad parameters.
            Compression::Zstd => zstd::bulk::compress(data, self.level).ok(),
            Compression::Lz4 => Some(lz4_flex::block::compress(data)),
        };
        match packed {
            Some(p) if p.len() < data.len() => (self.compression, p),
            _ => (Compression::None, data.to_vec()),
        }
    }
}

/// A codec with a reusable compression context, for one thread compressing
/// many chunks: avoids reallocating zstd's tables per chunk.
pub struct ChunkCompressor {
    codec: Codec,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl ChunkCompressor {
    pub fn new(codec: Codec) -> Self {
        let zstd = match codec.compression {
            Compression::Zstd => zstd::bulk::Compressor::new(codec.level).ok(),
            _ => None,
        };
        Self { codec, zstd }
    }

    /// Same output as [`Codec::compress`].
    pub fn compress(&mut self, data: &[u8]) -> (Compression, Vec<u8>) {
        match &mut self.zstd {
            Some(z) => match z.compress(data) {
                Ok(p) if p.len() < data.len() => (Compression::Zstd, p),
                Ok(_) => (Compression::None, data.to_vec()),
                Err(_) => self.codec.compress(data),
            },
            None => self.codec.compress(data),
        }
    }
}

/// Decompresses one chunk into exactly `expected_len` bytes.
///
/// `expected_len` comes from trusted metadata, so a hostile chunk can neither
/// make this allocate more nor return a different length.
pub fn decompress(compression: Compression, data: &[u8], expected_len: usize) -> Result<Vec<u8>> {
    let out = match compression {
        Compression::None => data.to_vec(),
        Compression::Zstd => {
            let mut out = Vec::with_capacity(expected_len);
            zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(data, &mut out))
                .map_err(|e| FormatError::Decompress(format!("zstd: {e}")))?;
            out
        }
        Compression::Lz4 => {
            let mut out = vec![0u8; expected_len];
            let n = lz4_flex::block::decompress_into(data, &mut out)
                .map_err(|e| FormatError::Decompress(format!("lz4: {e}")))?;
            out.truncate(n);
            out
        }
    };
    if out.len() != expected_len {
        return Err(FormatError::Decompress(format!(
            "{} chunk decoded to {} bytes, metadata says {expected_len}",
            compression.name(),
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_codec() {
        let data: Vec<u8> = b"skiff chunk "
            .iter()
            .cycle()
            .take(70_000)
            .copied()
            .collect();
        for c in ["zstd", "zstd:1", "lz4", "none"] {
            let codec = Codec::parse(c).unwrap();
            let (used, packed) = codec.compress(&data);
            assert_eq!(decompress(used, &packed, data.len()).unwrap(), data);
        }
    }

    #[test]
    fn reused_context_matches_one_shot() {
        let codec = Codec::default();
        let mut c = ChunkCompressor::new(codec);
        for i in 0..5u8 {
            let data: Vec<u8> = (0..50_000u32).map(|j| (j % 251) as u8 ^ i).collect();
            assert_eq!(c.compress(&data), codec.compress(&data));
        }
    }

    #[test]
    fn incompressible_is_stored_raw() {
        let data: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let (used, _) = Codec::default().compress(&data[..16]);
        assert_eq!(used, Compression::None);
    }

    #[test]
    fn wrong_length_is_rejected() {
        let data = vec![7u8; 10_000];
        let (used, packed) = Codec::default().compress(&data);
        assert!(decompress(used, &packed, 9_999).is_err());
        assert!(decompress(used, &packed, 10_001).is_err());
        assert!(decompress(Compression::Zstd, b"garbage", 10).is_err());
        assert!(decompress(Compression::Lz4, &[0xff; 8], 10).is_err());
    }

    #[test]
    fn parse_rejects_bad_levels() {
        assert!(Codec::parse("zstd:0").is_none());
        assert!(Codec::parse("zstd:20").is_none());
        assert!(Codec::parse("lz4:3").is_none());
        assert!(Codec::parse("gzip").is_none());
        assert_eq!(Codec::parse("zstd:9").unwrap().level, 9);
    }
}
