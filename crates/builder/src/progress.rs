//! Progress reporting hooks, so the builder never prints. The CLI draws bars.

pub trait Progress: Send + Sync {
    /// A layer of `count` starts; `size` is its compressed size.
    fn layer_started(&self, _position: usize, _count: usize, _digest: &str, _size: u64) {}
    /// Compressed bytes of the current layer read so far (an increment).
    fn layer_read(&self, _bytes: u64) {}
    fn layer_finished(&self) {}
    /// A blob upload starts.
    fn upload_started(&self, _what: &str, _size: u64) {}
    fn upload_finished(&self) {}
    fn note(&self, _message: &str) {}
}

pub struct NoProgress;

impl Progress for NoProgress {}
