//! Builds skiff images from OCI images.
//!
//! The flow: [`layer`] reads and normalises each layer's tar stream (with the
//! bounded reader in [`tarstream`]); [`tree`] merges layers top down so
//! shadowed files are never read; [`chunker`] cuts surviving files into
//! chunks; [`pipeline`] hashes, compresses, deduplicates and writes blobs;
//! [`build`] writes the metadata; [`convert`] publishes the result.

pub mod build;
pub mod chunker;
pub mod convert;
pub mod dict;
pub mod error;
pub mod layer;
pub mod pipeline;
pub mod progress;
pub mod tarstream;
pub mod trace;
pub mod tree;

pub use build::{build_image, BuildOptions, BuildStats};
pub use convert::{convert, load_dict, ConvertOptions, ConvertReport};
pub use dict::ChunkDict;
pub use error::{BuildError, Result};
pub use progress::{NoProgress, Progress};
pub use trace::{parse_trace, TraceEntry};
