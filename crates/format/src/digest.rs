//! Chunk digests.
//!
//! Chunks are addressed by a 32-byte digest of their *uncompressed* bytes, so
//! the same content dedups whatever codec stored it. blake3 is the default:
//! on this project's reference machine it hashes 64 KiB chunks several times
//! faster than sha256 even with SHA-NI (numbers in `docs/format.md`).

use std::fmt;

use crate::error::{FormatError, Result};

/// The hash function that produced a [`Digest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum DigestAlgorithm {
    #[default]
    Blake3 = 1,
    Sha256 = 2,
}

impl DigestAlgorithm {
    pub fn from_u8(v: u8) -> Result<Self> {
        match v {
            1 => Ok(Self::Blake3),
            2 => Ok(Self::Sha256),
            other => Err(FormatError::UnknownDigestAlgorithm(other)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Blake3 => "blake3",
            Self::Sha256 => "sha256",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "blake3" => Some(Self::Blake3),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    pub fn digest(self, data: &[u8]) -> Digest {
        match self {
            Self::Blake3 => Digest(*blake3::hash(data).as_bytes()),
            Self::Sha256 => {
                use sha2::Digest as _;
                Digest(sha2::Sha256::digest(data).into())
            }
        }
    }

    /// A streaming hasher for input that does not fit in one slice.
    pub fn hasher(self) -> Hasher {
        match self {
            Self::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
            Self::Sha256 => {
                use sha2::Digest as _;
                Hasher::Sha256(sha2::Sha256::new())
            }
        }
    }
}

pub enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Blake3(h) => {
                h.update(data);
            }
            Self::Sha256(h) => sha2::Digest::update(h, data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Self::Blake3(h) => Digest(*h.finalize().as_bytes()),
            Self::Sha256(h) => Digest(sha2::Digest::finalize(h).into()),
        }
    }
}

/// A 32-byte digest. Which algorithm made it is recorded beside it
/// (in the metadata header, or an `alg:hex` string).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    /// Parses `alg:hex`, returning the algorithm too.
    pub fn parse_prefixed(s: &str) -> Option<(DigestAlgorithm, Self)> {
        let (alg, hex) = s.split_once(':')?;
        Some((DigestAlgorithm::parse(alg)?, Self::from_hex(hex)?))
    }

    pub fn prefixed(&self, alg: DigestAlgorithm) -> String {
        format!("{}:{}", alg.name(), self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            DigestAlgorithm::Sha256.digest(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            DigestAlgorithm::Blake3.digest(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn streaming_matches_oneshot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        for alg in [DigestAlgorithm::Blake3, DigestAlgorithm::Sha256] {
            let mut h = alg.hasher();
            for part in data.chunks(999) {
                h.update(part);
            }
            assert_eq!(h.finish(), alg.digest(&data));
        }
    }

    #[test]
    fn prefixed_round_trip() {
        let d = DigestAlgorithm::Blake3.digest(b"x");
        let s = d.prefixed(DigestAlgorithm::Blake3);
        assert_eq!(
            Digest::parse_prefixed(&s),
            Some((DigestAlgorithm::Blake3, d))
        );
        assert_eq!(Digest::parse_prefixed("md5:00"), None);
        assert_eq!(Digest::parse_prefixed("blake3:zz"), None);
    }
}
