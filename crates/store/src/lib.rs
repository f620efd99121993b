//! Reading skiff images and verifying every byte read.

pub mod cache;
pub mod check;
pub mod chunks;
pub mod error;
pub mod fetch;
pub mod image;
mod link_rate;
pub mod metrics;
pub mod tail;

pub use cache::ChunkCache;
pub use check::{check_image, CheckReport};
pub use chunks::{verify_chunk, ChunkReader};
pub use error::{Result, StoreError};
pub use fetch::{FetchConfig, FetchError, Fetcher};
pub use image::SkiffImage;
pub use metrics::{Metrics, Snapshot};
pub use tail::{read_blob_tail, BlobTail};
