//! The skiff image format. `docs/format.md` is the specification; this crate
//! is its reference reader and writer.

pub mod blob;
pub mod compression;
pub mod digest;
pub mod error;
pub mod layout;
pub mod mediatype;
pub mod metadata;
pub mod writer;

pub use compression::{decompress, Codec, Compression};
pub use digest::{Digest, DigestAlgorithm};
pub use error::{FormatError, Result};
pub use metadata::{
    Attributes, BlobInfo, ChunkInfo, ChunkRef, Chunking, DirEntry, Header, InodeKind, Metadata,
};
pub use writer::{Content, Counts, InodeSpec, MetadataWriter};

#[cfg(test)]
mod tests;
