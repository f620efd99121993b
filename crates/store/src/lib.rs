//! Reading skiff images and verifying every byte read.

pub mod check;
pub mod chunks;
pub mod error;
pub mod image;
pub mod tail;

pub use check::{check_image, CheckReport};
pub use chunks::{verify_chunk, ChunkReader};
pub use error::{Result, StoreError};
pub use image::SkiffImage;
pub use tail::{read_blob_tail, BlobTail};
