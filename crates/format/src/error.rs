use thiserror::Error;

/// Why a piece of skiff metadata or a blob tail was rejected.
///
/// Every variant describes untrusted input; none is a bug in the reader.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not skiff metadata: bad magic number")]
    BadMagic,
    #[error(
        "unsupported skiff format version {0} (this build reads version {1}): convert an older image again with this skiff, or upgrade skiff for a newer one"
    )]
    UnsupportedVersion(u32, u32),
    #[error("metadata is truncated: {what} needs {need} bytes, {have} present")]
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    #[error("metadata section {section} is out of bounds or misaligned")]
    BadSection { section: &'static str },
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("inode {0} does not exist")]
    NoSuchInode(u64),
    #[error("inode {ino} is not a {expected}")]
    WrongKind { ino: u32, expected: &'static str },
    #[error("unknown chunk digest algorithm {0}")]
    UnknownDigestAlgorithm(u8),
    #[error("unknown chunk compression {0}")]
    UnknownCompression(u8),
    #[error("chunk does not decompress: {0}")]
    Decompress(String),
    #[error("value too large for the format: {0}")]
    TooLarge(String),
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;

pub(crate) fn corrupt(msg: impl Into<String>) -> FormatError {
    FormatError::Corrupt(msg.into())
}
