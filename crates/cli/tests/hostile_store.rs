//! Backends and blobs that lie: a range past a blob's end, a backend that
//! returns fewer bytes than asked. Each is a clear error; nothing is
//! allocated for bytes that do not exist, and no reader is left waiting.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use common::containers::layout;
use common::registry::Registry;
use skiff_oci::{Descriptor, FetchedManifest, ImageRef, RegistryOptions, Repository};

/// A range of a terabyte of a blob of a few bytes: the length may come
/// from an unverified blob footer. Before the fix each backend allocated
/// the whole length up front, and the process aborted.
#[test]
fn a_range_past_a_blob_allocates_nothing() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let layout_ref = ImageRef::parse(&format!("oci:{}:t", dir.display())).unwrap();
    let repo = layout_ref
        .open_for_write(&RegistryOptions::default())
        .unwrap()
        .repo;
    let bytes = b"a small blob".to_vec();
    let desc = Descriptor::for_bytes("application/octet-stream", &bytes);
    let data = bytes.clone();
    repo.push_blob(&desc, &mut || {
        Ok(Box::new(std::io::Cursor::new(data.clone())) as Box<dyn Read + Send>)
    })
    .unwrap();
    let huge = 1u64 << 40;
    let e = repo.read_range(&desc.digest, 0, huge).unwrap_err();
    assert!(e.to_string().contains("has only 12 bytes"), "{e}");
    assert_eq!(repo.read_range(&desc.digest, 2, 5).unwrap(), b"small");

    let registry = Registry::start();
    let remote = ImageRef::parse(&registry.reference("lies/blob:t"))
        .unwrap()
        .open_for_write(&RegistryOptions::default())
        .unwrap()
        .repo;
    remote
        .push_blob(&desc, &mut || {
            Ok(Box::new(std::io::Cursor::new(bytes.clone())) as Box<dyn Read + Send>)
        })
        .unwrap();
    let e = remote.read_range(&desc.digest, 0, huge).unwrap_err();
    assert!(e.to_string().contains("got 12 bytes"), "{e}");
}

/// Delegates to a real backend, but every range comes back one byte short.
struct ShortRanges(Arc<dyn Repository>);

impl Repository for ShortRanges {
    fn describe(&self) -> String {
        format!("{} (short ranges)", self.0.describe())
    }
    fn fetch_manifest(&self, reference: &str) -> skiff_oci::Result<FetchedManifest> {
        self.0.fetch_manifest(reference)
    }
    fn open_blob(&self, desc: &Descriptor) -> skiff_oci::Result<Box<dyn Read + Send>> {
        self.0.open_blob(desc)
    }
    fn read_range(&self, digest: &str, offset: u64, len: u64) -> skiff_oci::Result<Vec<u8>> {
        let mut bytes = self.0.read_range(digest, offset, len)?;
        bytes.pop();
        Ok(bytes)
    }
    fn has_blob(&self, digest: &str) -> skiff_oci::Result<bool> {
        self.0.has_blob(digest)
    }
    fn push_blob(
        &self,
        desc: &Descriptor,
        open: &mut dyn FnMut() -> std::io::Result<Box<dyn Read + Send>>,
    ) -> skiff_oci::Result<()> {
        self.0.push_blob(desc, open)
    }
    fn push_manifest(&self, b: &[u8], t: &str, tag: Option<&str>) -> skiff_oci::Result<String> {
        self.0.push_manifest(b, t, tag)
    }
}

/// The fetcher sliced a range's bytes on trust that the backend returned
/// exactly what was asked: a short one panicked its worker and left the
/// reader waiting. Now the read fails, and the fetcher goes on serving.
#[test]
fn a_short_range_fails_the_read_not_the_fetcher() {
    let opened = ImageRef::parse(layout())
        .unwrap()
        .open(&RegistryOptions::default())
        .unwrap();
    let short: Arc<dyn Repository> = Arc::new(ShortRanges(opened.repo.clone()));
    let resolved =
        skiff_oci::resolve(short.as_ref(), opened.reference.as_deref().unwrap(), None).unwrap();
    let image = Arc::new(skiff_store::SkiffImage::open(short, &resolved.images[0]).unwrap());
    let ino = image
        .metadata
        .resolve(b"/etc/passwd")
        .unwrap()
        .expect("the test image has /etc/passwd");
    let fetcher = Arc::new(skiff_store::Fetcher::new(
        image,
        None,
        skiff_store::FetchConfig {
            read_timeout: Duration::from_secs(20),
            readahead: 0,
            ..Default::default()
        },
    ));
    let (done, result) = std::sync::mpsc::channel();
    let f = fetcher.clone();
    std::thread::spawn(move || {
        let _ = done.send(f.read(ino, 0, 64));
    });
    let got = result
        .recv_timeout(Duration::from_secs(10))
        .expect("the read hung: the fetch worker died");
    let e = got.expect_err("a short range was served");
    assert!(e.to_string().contains("got"), "{e}");
}
