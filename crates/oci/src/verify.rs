//! A reader that checks a blob's sha256 and size as it streams, and fails at
//! end of stream, before the caller sees EOF, if either is wrong.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::error::OciError;

pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    expected_digest: String,
    expected_size: u64,
    seen: u64,
    what: String,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(
        inner: R,
        expected_digest: &str,
        expected_size: u64,
        what: impl Into<String>,
    ) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            expected_digest: expected_digest.to_string(),
            expected_size,
            seen: 0,
            what: what.into(),
            done: false,
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.seen
    }
}

fn invalid(e: OciError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen > self.expected_size {
            return Err(invalid(OciError::SizeMismatch {
                what: self.what.clone(),
                expected: self.expected_size,
                actual: self.seen,
            }));
        }
        if n == 0 {
            self.done = true;
            if self.seen != self.expected_size {
                return Err(invalid(OciError::SizeMismatch {
                    what: self.what.clone(),
                    expected: self.expected_size,
                    actual: self.seen,
                }));
            }
            let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
            if actual != self.expected_digest {
                return Err(invalid(OciError::DigestMismatch {
                    what: self.what.clone(),
                    expected: self.expected_digest.clone(),
                    actual,
                }));
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::sha256_digest;

    #[test]
    fn accepts_good_rejects_bad() {
        let data = b"hello layer".to_vec();
        let d = sha256_digest(&data);
        let mut out = Vec::new();
        VerifyingReader::new(&data[..], &d, data.len() as u64, "x")
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let mut bad = data.clone();
        bad[0] ^= 1;
        assert!(VerifyingReader::new(&bad[..], &d, 11, "x")
            .read_to_end(&mut Vec::new())
            .is_err());
        assert!(VerifyingReader::new(&data[..5], &d, 11, "x")
            .read_to_end(&mut Vec::new())
            .is_err());
        assert!(VerifyingReader::new(&data[..], &d, 5, "x")
            .read_to_end(&mut Vec::new())
            .is_err());
    }
}
