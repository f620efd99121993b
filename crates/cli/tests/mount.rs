//! `skiff mount` against the real Debian image in a real registry: the
//! mounted tree, lazy fetching counted on the wire, tampering, crashes and
//! registry faults.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::{Faults, Proxy};
use common::registry::Registry;
use common::trees::{assert_same, snapshot};
use common::{debian_image, flip_byte, umoci_unpack, Mounted, Skiff};

/// A registry holding the Debian image converted to skiff, as `skiff/debian:full`.
fn converted() -> (Registry, Skiff, String) {
    let reg = Registry::start();
    reg.push_layout(
        &format!("oci:{}:full", debian_image().display()),
        "src/debian:full",
    );
    let skiff = Skiff::new();
    let dst = reg.reference("skiff/debian:full");
    skiff.ok(&["convert", "-q", &reg.reference("src/debian:full"), &dst]);
    (reg, skiff, dst)
}

/// Where a file's chunks live: (blob digest, compressed offset, compressed
/// size, chunk digest hex) for each distinct chunk, in file order.
/// The skiff image `image` names, opened as a mount would.
fn open_image(image: &str) -> skiff_store::SkiffImage {
    let opened = skiff_oci::ImageRef::parse(image)
        .unwrap()
        .open(&skiff_oci::RegistryOptions::default())
        .unwrap();
    let resolved = skiff_oci::resolve(
        opened.repo.as_ref(),
        opened.reference.as_deref().unwrap(),
        None,
    )
    .unwrap();
    skiff_store::SkiffImage::open(opened.repo.clone(), &resolved.images[0]).unwrap()
}

fn chunks_of(image: &str, path: &str) -> Vec<(String, u64, u32, String)> {
    let img = open_image(image);
    let md = &img.metadata;
    let ino = md.resolve(path.as_bytes()).unwrap().unwrap();
    let mut out: Vec<(String, u64, u32, String)> = Vec::new();
    for r in md.chunk_refs(ino).unwrap() {
        let Some(c) = r.chunk else { continue };
        let info = md.chunk(c).unwrap();
        let entry = (
            img.blob_layers[info.blob as usize].digest.clone(),
            info.compressed_offset,
            info.compressed_size,
            info.digest.to_hex(),
        );
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

fn read(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

#[test]
fn mounted_tree_equals_umoci_unpack() {
    let (_reg, skiff, image) = converted();
    let m = Mounted::new(&skiff, &image, &[]);
    let (_keep, reference) = umoci_unpack(&format!("{}:full", debian_image().display()));
    let ours = snapshot(&m.dir, true);
    assert_same(&ours, &snapshot(&reference, true), "mount vs umoci");
    assert!(ours.nodes[&b"/usr/bin/ping"[..]]
        .xattrs
        .contains_key(&b"security.capability"[..]));
    let stats = m.stats();
    let metrics = &stats["metrics"];
    assert_eq!(metrics["verify_failures"], 0);
    assert_eq!(metrics["read_errors"], 0);
    // Every chunk was fetched once: singleflight and the cache hold.
    let chunk_count = skiff.json(&["inspect", &image])["chunks"].as_u64().unwrap();
    assert!(metrics["fetched_chunks"].as_u64().unwrap() <= chunk_count);
    let prom = skiff.ok(&["stats", "--prometheus", m.dir.to_str().unwrap()]);
    for series in [
        "skiff_fetched_bytes_total",
        "skiff_verify_failures_total 0",
        "skiff_read_latency_seconds_bucket{le=\"+Inf\"}",
        "skiff_inflight_requests",
    ] {
        assert!(prom.contains(series), "{series} missing from:\n{prom}");
    }
    // Read-only.
    let e = std::fs::write(m.dir.join("etc/new-file"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(30), "{e}"); // EROFS
    assert_eq!(
        std::fs::create_dir(m.dir.join("newdir"))
            .unwrap_err()
            .raw_os_error(),
        Some(30)
    );
    assert_eq!(
        std::fs::remove_file(m.dir.join("etc/motd"))
            .unwrap_err()
            .raw_os_error(),
        Some(30)
    );
}

#[test]
fn a_read_fetches_only_what_it_needs() {
    let (reg, skiff, _image) = converted();
    let proxy = Proxy::start(&reg.addr);
    let image = proxy.reference("skiff/debian:full");
    let file = "/usr/bin/python3.11";
    let chunks = chunks_of(&image, file);
    let compressed: u64 = chunks.iter().map(|c| c.2 as u64).sum();
    let m = Mounted::new(&skiff, &image, &["--no-prefetch", "--readahead", "0"]);
    let before = proxy.bytes();
    let data = read(&m.dir.join(&file[1..])).unwrap();
    let fetched = proxy.bytes() - before;
    let (_keep, reference) = umoci_unpack(&format!("{}:full", debian_image().display()));
    assert_eq!(data, std::fs::read(reference.join(&file[1..])).unwrap());
    assert!(data.len() > 4 << 20, "the test needs a file of several MB");
    assert!(
        fetched as f64 <= 1.5 * compressed as f64,
        "reading {file} ({compressed} compressed bytes) moved {fetched} bytes"
    );
    // Nothing else of the image's 38 MB moved.
    let blob_total: u64 = skiff.json(&["inspect", &image])["blob_bytes"]
        .as_u64()
        .unwrap();
    assert!(fetched * 4 < blob_total);
    // A second read is served locally.
    let before = proxy.bytes();
    read(&m.dir.join(&file[1..])).unwrap();
    assert_eq!(proxy.bytes(), before);
}

#[test]
fn tampered_registry_blob_fails_only_the_affected_file() {
    let (reg, skiff, image) = converted();
    let victim = "/usr/bin/python3.11";
    let chunks = chunks_of(&image, victim);
    let (blob, offset, _, _) = &chunks[chunks.len() / 2];
    flip_byte(&reg.blob_path(blob), offset + 7);
    let m = Mounted::new(&skiff, &image, &["--no-prefetch"]);
    let err = read(&m.dir.join(&victim[1..])).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "{err}"); // EIO
    assert_eq!(
        read(&m.dir.join("etc/motd")).unwrap(),
        b"rewritten by layer 3\n"
    );
    assert!(read(&m.dir.join("usr/bin/dpkg")).unwrap().len() > 100_000);
    let metrics = &m.stats()["metrics"];
    assert!(metrics["verify_failures"].as_u64().unwrap() >= 1);
    assert!(metrics["read_errors"].as_u64().unwrap() >= 1);
}

/// Where the node cache keeps the chunk with this BLAKE3 digest.
fn cached_chunk(skiff: &Skiff, hex: &str) -> std::path::PathBuf {
    skiff
        .root
        .path()
        .join("cache/chunks/blake3")
        .join(&hex[..2])
        .join(hex)
}

#[test]
fn tampered_cache_entry_is_never_served() {
    let (_reg, skiff, image) = converted();
    let file = "usr/bin/dpkg";
    let good = {
        let m = Mounted::new(&skiff, &image, &["--no-prefetch"]);
        read(&m.dir.join(file)).unwrap()
    };
    // Damage every cached chunk of the file.
    let chunks = chunks_of(&image, &format!("/{file}"));
    for (_, _, _, hex) in &chunks {
        let p = cached_chunk(&skiff, hex);
        flip_byte(&p, 100);
    }
    let m = Mounted::new(&skiff, &image, &["--no-prefetch", "--readahead", "0"]);
    // The damage is detected, the chunks fetched again, and the file correct.
    assert_eq!(read(&m.dir.join(file)).unwrap(), good);
    let stats = m.stats();
    // Concurrent readers may each detect one damaged entry: at least one
    // detection per entry, and each chunk fetched again exactly once.
    assert!(stats["cache_corrupt_entries"].as_u64().unwrap() >= chunks.len() as u64);
    assert_eq!(
        stats["metrics"]["fetched_chunks"].as_u64().unwrap(),
        chunks.len() as u64
    );
    // The cache holds good copies again.
    for (_, _, _, hex) in &chunks {
        let p = cached_chunk(&skiff, hex);
        let data = std::fs::read(&p).unwrap();
        assert_eq!(
            &skiff_format::DigestAlgorithm::Blake3.digest(&data).to_hex(),
            hex
        );
    }
}

#[test]
fn killed_daemon_leaves_a_mount_umount_clears_and_remount_reuses_the_cache() {
    let (_reg, skiff, image) = converted();
    let (_keep, reference) = umoci_unpack(&format!("{}:full", debian_image().display()));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnt");
    let d = dir.to_str().unwrap();
    skiff.ok(&["mount", "--daemon", &image, d]);
    let pid: i32 = serde_json::from_str::<serde_json::Value>(&skiff.ok(&["stats", d])).unwrap()
        ["pid"]
        .as_i64()
        .unwrap() as i32;
    // Read the whole tree in the background, and kill the daemon mid-way.
    let mut reader = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find {d} -type f -exec cat {{}} + > /dev/null 2>&1"
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let _ = reader.wait();
    let err = std::fs::read_dir(&dir).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(107), "{err}"); // ENOTCONN
    skiff.ok(&["umount", d]);
    assert!(!std::fs::read_to_string("/proc/mounts").unwrap().contains(d));
    let cached = skiff.json(&["cache", "stats"])["entries"].as_u64().unwrap();
    assert!(cached > 0, "nothing was cached before the kill");
    let m = Mounted::new(&skiff, &image, &[]);
    assert_same(
        &snapshot(&m.dir, true),
        &snapshot(&reference, true),
        "remount after kill -9",
    );
    assert_eq!(m.stats()["metrics"]["verify_failures"], 0);
    drop(m);
    let pruned = skiff.json(&["cache", "prune", "1M"]);
    assert!(pruned["remaining"].as_u64().unwrap() <= 1 << 20);
    assert!(skiff.json(&["cache", "stats"])["bytes"].as_u64().unwrap() <= 1 << 20);
}

#[test]
fn registry_faults_are_retried() {
    let (reg, skiff, _image) = converted();
    let proxy = Proxy::start(&reg.addr);
    let image = proxy.reference("skiff/debian:full");
    let m = Mounted::new(&skiff, &image, &["--no-prefetch"]);
    proxy.set_faults(Faults {
        fail_every: 3,
        reset_every: 5,
        blackhole: false,
    });
    // Read everything through the faults with 16 readers at once, as a
    // starting container would; then compare (now from cache) with umoci.
    let mut files = Vec::new();
    let mut stack = vec![m.dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                files.push(e.path());
            }
        }
    }
    let files = std::sync::Arc::new(std::sync::Mutex::new(files));
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let files = files.clone();
            std::thread::spawn(move || loop {
                let Some(f) = files.lock().unwrap().pop() else {
                    return;
                };
                read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let (_keep, reference) = umoci_unpack(&format!("{}:full", debian_image().display()));
    assert_same(
        &snapshot(&m.dir, true),
        &snapshot(&reference, true),
        "mount through faults",
    );
    use std::sync::atomic::Ordering;
    assert!(proxy.counters.injected_503.load(Ordering::SeqCst) > 0);
    assert!(proxy.counters.injected_resets.load(Ordering::SeqCst) > 0);
    assert_eq!(m.stats()["metrics"]["read_errors"], 0);
}

#[test]
fn a_stalled_registry_fails_reads_with_eio_and_the_daemon_keeps_serving() {
    let (reg, skiff, _image) = converted();
    let proxy = Proxy::start(&reg.addr);
    let image = proxy.reference("skiff/debian:full");
    let m = Mounted::new(&skiff, &image, &["--no-prefetch", "--read-timeout", "2"]);
    let motd = read(&m.dir.join("etc/motd")).unwrap();
    proxy.set_faults(Faults {
        blackhole: true,
        ..Default::default()
    });
    let started = Instant::now();
    let err = read(&m.dir.join("usr/bin/python3.11")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the read hung for {:?}",
        started.elapsed()
    );
    // Still serving: metadata, cached data, and the control socket.
    assert_eq!(read(&m.dir.join("etc/motd")).unwrap(), motd);
    assert!(std::fs::read_dir(m.dir.join("usr/lib")).unwrap().count() > 10);
    assert!(m.stats()["metrics"]["read_timeouts"].as_u64().unwrap() >= 1);
    proxy.set_faults(Faults::default());
}

#[test]
fn recorded_trace_becomes_a_prefetch_order() {
    let (reg, skiff, image) = converted();
    // Cached whole on this node: a passthrough open would hide its reads.
    {
        let m = Mounted::new(&skiff, &image, &[]);
        read(&m.dir.join("usr/bin/python3.11")).unwrap();
    }
    let trace = tempfile::NamedTempFile::new().unwrap();
    {
        let m = Mounted::new(
            &skiff,
            &image,
            &["--record-trace", trace.path().to_str().unwrap()],
        );
        for f in [
            "usr/bin/python3.11",
            "etc/os-release",
            "usr/bin/dpkg",
            "etc/os-release",
        ] {
            read(&m.dir.join(f)).unwrap();
        }
        assert_eq!(m.stats()["metrics"]["passthrough_opens"], 0);
    }
    let recorded = std::fs::read_to_string(trace.path()).unwrap();
    // Chunk lines: each chunk's first read, as path and file offset.
    let python_chunks: Vec<&str> = recorded
        .lines()
        .filter(|l| l.starts_with("/usr/bin/python3.11\t"))
        .collect();
    assert_eq!(
        python_chunks.len(),
        chunks_of(&image, "/usr/bin/python3.11").len()
    );
    assert_eq!(python_chunks[0], "/usr/bin/python3.11\t0");
    assert_eq!(
        recorded
            .lines()
            .filter(|l| !l.contains('\t'))
            .collect::<Vec<_>>(),
        [
            "/usr/bin/python3.11",
            "/usr/lib/os-release",
            "/usr/bin/dpkg"
        ],
        "first reads, in order, once each (os-release is a symlink to /usr/lib)"
    );
    let traced = reg.reference("skiff/debian:traced");
    skiff.convert_with_trace(&reg.reference("src/debian:full"), &traced, trace.path());
    // A fresh node mounts it through a counting proxy and prefetches.
    let proxy = Proxy::start(&reg.addr);
    let fresh = Skiff::new();
    let m = Mounted::new(&fresh, &proxy.reference("skiff/debian:traced"), &[]);
    let expected: u64 = [
        "/usr/bin/python3.11",
        "/usr/lib/os-release",
        "/usr/bin/dpkg",
    ]
    .iter()
    .flat_map(|f| chunks_of(&traced, f))
    .map(|c| c.3)
    .collect::<std::collections::HashSet<_>>()
    .len() as u64;
    assert_eq!(
        skiff.json(&["inspect", &traced])["prefetch_chunks"].as_u64(),
        Some(expected)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while m.stats()["metrics"]["prefetched_chunks"].as_u64().unwrap() < expected {
        assert!(
            Instant::now() < deadline,
            "prefetch did not finish: {}",
            m.stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Reading the traced files now moves nothing over the wire.
    std::thread::sleep(Duration::from_millis(300));
    let before = proxy.bytes();
    for f in ["usr/bin/python3.11", "usr/lib/os-release", "usr/bin/dpkg"] {
        read(&m.dir.join(f)).unwrap();
    }
    assert_eq!(proxy.bytes(), before);
}

#[test]
fn a_partly_read_file_prefetches_only_the_chunks_read() {
    let (reg, skiff, image) = converted();
    let file = "/usr/bin/python3.11";
    let chunks = chunks_of(&image, file);
    assert!(chunks.len() > 8, "the test needs a file of many chunks");
    let trace = tempfile::NamedTempFile::new().unwrap();
    {
        let m = Mounted::new(
            &skiff,
            &image,
            &["--record-trace", trace.path().to_str().unwrap()],
        );
        let mut head = [0u8; 4096];
        std::fs::File::open(m.dir.join(&file[1..]))
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        assert_eq!(&head[..4], b"\x7fELF");
    }
    let traced = reg.reference("skiff/debian:head");
    skiff.convert_with_trace(&reg.reference("src/debian:full"), &traced, trace.path());
    let info = skiff.json(&["inspect", &traced]);
    let listed = info["prefetch_chunks"].as_u64().unwrap();
    // The first chunk, plus what the kernel read ahead: not the whole file.
    assert!(
        listed >= 1 && listed < chunks.len() as u64 / 2,
        "{listed} of {} chunks listed",
        chunks.len()
    );
    let whole: u64 = chunks.iter().map(|c| c.2 as u64).sum();
    assert!(info["prefetch_bytes"].as_u64().unwrap() < whole / 2);
    // A plain list of paths still means whole files.
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list.path(), format!("{file}\n")).unwrap();
    let listed_whole = reg.reference("skiff/debian:whole");
    skiff.convert_with_trace(
        &reg.reference("src/debian:full"),
        &listed_whole,
        list.path(),
    );
    assert_eq!(
        skiff.json(&["inspect", &listed_whole])["prefetch_chunks"].as_u64(),
        Some(chunks.len() as u64)
    );
    // A malformed trace is refused with the line named.
    std::fs::write(list.path(), format!("{file}\tnot-a-number\n")).unwrap();
    let (_, err) = skiff.fails(&[
        "convert",
        "-q",
        &reg.reference("src/debian:full"),
        &listed_whole,
        "--prefetch-trace",
        list.path().to_str().unwrap(),
    ]);
    assert!(err.contains("line 1"), "{err}");
}

/// Files whose chunks all lie in the same blob, within `window` bytes after
/// the end of `file`'s last chunk, sharing no chunk with it.
fn blob_neighbours(image: &str, file: &str, window: u64) -> Vec<String> {
    let img = open_image(image);
    let md = &img.metadata;
    let chunks_of_ino = |ino: u32| -> Vec<skiff_format::ChunkInfo> {
        md.chunk_refs(ino)
            .unwrap()
            .iter()
            .filter_map(|r| r.chunk)
            .map(|c| md.chunk(c).unwrap())
            .collect()
    };
    let mine = chunks_of_ino(md.resolve(file.as_bytes()).unwrap().unwrap());
    let last = mine.iter().max_by_key(|c| c.compressed_offset).unwrap();
    let (blob, end) = (
        last.blob,
        last.compressed_offset + last.compressed_size as u64,
    );
    let mut out = Vec::new();
    md.walk(|path, e| {
        if md.attributes(e.ino)?.kind() != skiff_format::InodeKind::File {
            return Ok(());
        }
        let theirs = chunks_of_ino(e.ino);
        let inside = !theirs.is_empty()
            && theirs.iter().all(|c| {
                c.blob == blob
                    && c.compressed_offset >= end
                    && c.compressed_offset + c.compressed_size as u64 <= end + window
                    && !mine.contains(c)
            });
        if inside {
            out.push(format!("/{}", String::from_utf8_lossy(path)));
        }
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn read_ahead_fetches_the_files_that_follow_in_the_blob() {
    let (reg, skiff, _image) = converted();
    let proxy = Proxy::start(&reg.addr);
    let image = proxy.reference("skiff/debian:full");
    let file = "/usr/bin/dpkg";
    let next = blob_neighbours(&image, file, 64 << 10);
    assert!(!next.is_empty(), "no file follows {file} within 64K");
    // With read-ahead, reading the file brings its neighbours along.
    {
        let m = Mounted::new(
            &skiff,
            &image,
            &["--no-prefetch", "--readahead", "256K", "--whole-file", "0"],
        );
        read(&m.dir.join(&file[1..])).unwrap();
        wait_idle(&m);
        assert!(m.stats()["metrics"]["readahead_chunks"].as_u64().unwrap() > 0);
        let before = proxy.bytes();
        for n in &next {
            read(&m.dir.join(&n[1..])).unwrap();
        }
        assert_eq!(proxy.bytes(), before, "{next:?} were not read ahead");
    }
    // Without it, they come from the registry (on a node with a fresh cache).
    let fresh = Skiff::new();
    let m = Mounted::new(
        &fresh,
        &image,
        &["--no-prefetch", "--readahead", "0", "--whole-file", "0"],
    );
    read(&m.dir.join(&file[1..])).unwrap();
    wait_idle(&m);
    let before = proxy.bytes();
    for n in &next {
        read(&m.dir.join(&n[1..])).unwrap();
    }
    let stats = m.stats();
    assert!(
        proxy.bytes() > before,
        "{next:?} came from nowhere after {file}; daemon: {stats:#}"
    );
    assert_eq!(stats["metrics"]["readahead_chunks"], 0);
}

/// Waits until the mount has no range request in flight.
fn wait_idle(m: &Mounted) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.stats()["metrics"]["inflight_requests"].as_u64() != Some(0) {
        assert!(Instant::now() < deadline, "fetches did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn a_miss_fetches_the_rest_of_a_file_up_to_the_whole_file_limit() {
    let (reg, skiff, _image) = converted();
    let proxy = Proxy::start(&reg.addr);
    let image = proxy.reference("skiff/debian:full");
    // Larger than the kernel's read-ahead window (1 MiB), so its end is
    // fetched only if the daemon fetches the whole file.
    let file = "usr/lib/x86_64-linux-gnu/libc.so.6";
    let first_byte = |m: &Mounted| {
        let mut f = std::fs::File::open(m.dir.join(file)).unwrap();
        let mut b = [0u8; 1];
        f.read_exact(&mut b).unwrap();
        assert_eq!(b[0], 0x7f, "not an ELF file");
    };
    let rest_fetched = |node: &Skiff, limit: &str| {
        let m = Mounted::new(
            node,
            &image,
            &[
                "--no-prefetch",
                "--readahead",
                "0",
                "--whole-file",
                limit,
                "--whole-file-time",
                "0",
            ],
        );
        first_byte(&m);
        wait_idle(&m);
        let whole = m.stats()["metrics"]["whole_file_chunks"].as_u64().unwrap();
        let before = proxy.bytes();
        let data = read(&m.dir.join(file)).unwrap();
        assert!(data.len() > 1 << 20, "{file} is only {} bytes", data.len());
        (whole, proxy.bytes() - before)
    };
    // Within the limit: one read brings the whole file, in parallel.
    let (whole, later) = rest_fetched(&skiff, "4M");
    assert!(whole > 1, "only {whole} chunks fetched beside the read");
    assert_eq!(later, 0, "reading the rest of {file} went to the registry");
    // Over the limit, or off: only what is read comes.
    for limit in ["64K", "0"] {
        let (whole, later) = rest_fetched(&Skiff::new(), limit);
        assert_eq!(whole, 0, "--whole-file {limit} fetched {whole} chunks");
        assert!(later > 0, "the rest of {file} came from nowhere");
    }
}

#[test]
fn a_file_over_the_limit_comes_whole_once_the_link_is_measured_fast_enough() {
    // Fresh nodes: another test may have cached these files on the shared one.
    let (reg, _skiff, _image) = converted();
    let proxy = Proxy::start(&reg.addr);
    let image = proxy.reference("skiff/debian:full");
    let stored = |path: &str| -> u64 { chunks_of(&image, path).iter().map(|c| c.2 as u64).sum() };
    // The first file is fetched whole under the fixed limit, in 1 MiB
    // requests that measure the link; the second is over that limit.
    let (first, second) = (
        "usr/lib/x86_64-linux-gnu/libcrypto.so.3",
        "usr/bin/python3.11",
    );
    let floor = (stored(&format!("/{first}")) + stored(&format!("/{second}"))) / 2;
    assert!(
        stored(&format!("/{first}")) > 3 << 19,
        "{first} is too small to measure the link"
    );
    let first_byte = |m: &Mounted, path: &str| {
        let mut f = std::fs::File::open(m.dir.join(path)).unwrap();
        f.read_exact(&mut [0u8; 1]).unwrap();
        wait_idle(m);
        m.stats()["metrics"]["whole_file_chunks"].as_u64().unwrap()
    };
    let run = |ms: &str| {
        let floor = floor.to_string();
        let node = Skiff::new();
        let m = Mounted::new(
            &node,
            &image,
            &[
                "--no-prefetch",
                "--readahead",
                "0",
                "--whole-file",
                &floor,
                "--whole-file-time",
                ms,
            ],
        );
        let before = first_byte(&m, first);
        assert!(before > 1, "{first} was not fetched whole");
        let rate = m.stats()["metrics"]["link_bytes_per_sec"].as_u64().unwrap();
        let whole = first_byte(&m, second) - before;
        let bytes = proxy.bytes();
        let data = read(&m.dir.join(second)).unwrap();
        assert!(
            data.len() > 4 << 20,
            "{second} is only {} bytes",
            data.len()
        );
        (rate, whole, proxy.bytes() - bytes)
    };
    // A minute at any measured rate holds the second file.
    let (rate, whole, later) = run("60000");
    assert!(rate > 0, "no link rate was measured");
    assert!(
        whole > 1,
        "only {whole} chunks of {second} fetched beside the read"
    );
    assert_eq!(
        later, 0,
        "reading the rest of {second} went to the registry"
    );
    // The rate is measured, but the time-based limit is off.
    let (rate, whole, later) = run("0");
    assert!(rate > 0, "no link rate was measured");
    assert_eq!(whole, 0, "--whole-file-time 0 fetched {whole} chunks");
    assert!(later > 0, "the rest of {second} came from nowhere");
}

#[test]
fn pulls_go_through_a_mirror_and_fall_back_to_the_registry() {
    let (reg, skiff, image) = converted();
    let mirror = Proxy::start(&reg.addr);
    let url = format!("http://{}", mirror.addr);
    let m = Mounted::new(&skiff, &image, &["--no-prefetch", "--mirror", &url]);
    let dpkg = read(&m.dir.join("usr/bin/dpkg")).unwrap();
    let via_mirror = mirror.counters.blob_gets.lock().unwrap().len();
    assert!(via_mirror > 0, "nothing went through the mirror");
    // The mirror fails every request: reads still work, from the registry.
    mirror.set_faults(Faults {
        fail_every: 1,
        ..Default::default()
    });
    let python = read(&m.dir.join("usr/bin/python3.11")).unwrap();
    assert!(python.len() > 4 << 20);
    assert!(dpkg.len() > 100_000);
    assert_eq!(m.stats()["metrics"]["read_errors"], 0);
    use std::sync::atomic::Ordering;
    assert!(mirror.counters.injected_503.load(Ordering::SeqCst) > 0);
}

#[test]
fn posix_read_only_semantics() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("src");
    common::images::edge_image(&layout);
    // Add a sparse file over 4 GiB as a fourth image.
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let size: u64 = (5 << 30) + 123;
    let f = std::fs::File::create(tree.join("sparse")).unwrap();
    f.set_len(size).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"past four gib", 4_500_000_000).unwrap();
    drop(f);
    let tar = work.path().join("sparse.tar");
    common::sh(
        Command::new("tar")
            .args(["--sparse", "--format=gnu", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&tree)
            .arg("sparse"),
    );
    common::layers::write_image(
        &layout,
        "sparse",
        &[common::layers::LayerBlob::gzip(
            &std::fs::read(&tar).unwrap(),
        )],
        ("linux", "amd64"),
    );
    let skiff = Skiff::new();
    let edge = format!("oci:{}:edge", work.path().join("out").display());
    let sparse = format!("oci:{}:sparse", work.path().join("out").display());
    skiff.ok(&[
        "convert",
        "-q",
        &format!("oci:{}:edge", layout.display()),
        &edge,
    ]);
    skiff.ok(&[
        "convert",
        "-q",
        &format!("oci:{}:sparse", layout.display()),
        &sparse,
    ]);

    let m = Mounted::new(&skiff, &edge, &[]);
    let (_keep, reference) = umoci_unpack(&format!("{}:edge", layout.display()));
    assert_same(
        &snapshot(&m.dir, true),
        &snapshot(&reference, true),
        "edge image mounted vs umoci",
    );
    let d = &m.dir;
    // Hardlinks are one inode; nlink counts them.
    let a = std::fs::metadata(d.join("hl/link1")).unwrap();
    let b = std::fs::metadata(d.join("hl/link2")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_ne!(a.ino(), std::fs::metadata(d.join("hl/orig")).unwrap().ino());
    // Devices, fifos and symlinks keep their types.
    let dev = std::fs::symlink_metadata(d.join("dev-null")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!((libc::major(dev.rdev()), libc::minor(dev.rdev())), (1, 3));
    assert!(std::fs::symlink_metadata(d.join("dev-loop"))
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(std::fs::symlink_metadata(d.join("fifo1"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        std::fs::read_link(d.join("ln")).unwrap(),
        std::path::Path::new("a/keep")
    );
    // The mount is nodev: a device node cannot be opened through it.
    assert!(std::fs::File::open(d.join("dev-null")).is_err());
    // st_blocks: a 4 KiB-block filesystem's allocation.
    let big = std::fs::metadata(d.join("big")).unwrap();
    assert_eq!(big.blocks(), 200_000u64.div_ceil(4096) * 8);
    assert_eq!(std::fs::metadata(d.join("empty")).unwrap().blocks(), 0);
    // Permissions: default_permissions makes the kernel enforce modes.
    let owned = d.join("owned");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(&owned)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a 0600 file of uid 1000 was readable by nobody"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(d.join("a/keep"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"keep me");
    drop(m);

    let m = Mounted::new(&skiff, &sparse, &[]);
    let meta = std::fs::metadata(m.dir.join("sparse")).unwrap();
    assert_eq!(meta.len(), size);
    assert!(
        meta.blocks() <= 16,
        "holes counted as blocks: {}",
        meta.blocks()
    );
    let f = std::fs::File::open(m.dir.join("sparse")).unwrap();
    let mut buf = [0u8; 13];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 4_500_000_000).unwrap();
    assert_eq!(&buf, b"past four gib");
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, size - 13).unwrap();
    assert_eq!(buf, [0u8; 13]);
}

#[test]
fn local_files_open_in_kernel_passthrough() {
    let (_reg, skiff, image) = converted();
    let file = "usr/bin/python3.11";
    let (_keep, reference) = umoci_unpack(&format!("{}:full", debian_image().display()));
    let want = std::fs::read(reference.join(file)).unwrap();
    {
        let m = Mounted::new(&skiff, &image, &["--no-prefetch"]);
        // First open: not local yet, served by the daemon.
        assert_eq!(read(&m.dir.join(file)).unwrap(), want);
        assert_eq!(m.stats()["metrics"]["passthrough_opens"], 0);
        // Now every chunk is local: the next open is handed to the kernel.
        assert_eq!(read(&m.dir.join(file)).unwrap(), want);
        let metrics = m.stats()["metrics"].clone();
        assert_eq!(metrics["passthrough_opens"], 1);
        // Small files stay on the normal path.
        read(&m.dir.join("etc/motd")).unwrap();
        read(&m.dir.join("etc/motd")).unwrap();
        assert_eq!(m.stats()["metrics"]["passthrough_opens"], 1);

        // The kernel fails a passthrough open (EIO) while the inode has
        // cached opens, and the reverse: an inode keeps its first open's
        // mode while any open remains. A file opened cold and held open...
        let other = "usr/lib/x86_64-linux-gnu/libc.so.6";
        let want_other = std::fs::read(reference.join(other)).unwrap();
        let held = std::fs::File::open(m.dir.join(other)).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &held, &mut got).unwrap();
        assert_eq!(got, want_other);
        // ...opens again, now local, in the same (cached) mode.
        assert_eq!(read(&m.dir.join(other)).unwrap(), want_other);
        assert_eq!(m.stats()["metrics"]["passthrough_opens"], 1);
        drop(held);
        // And a passthrough file held open keeps later opens in passthrough.
        let held = std::fs::File::open(m.dir.join(file)).unwrap();
        assert_eq!(read(&m.dir.join(file)).unwrap(), want);
        drop(held);
        assert_eq!(m.stats()["metrics"]["passthrough_opens"], 3);
    }
    // A new mount finds the chunks in the node cache and passes through at once.
    let m = Mounted::new(&skiff, &image, &["--no-prefetch"]);
    assert_eq!(read(&m.dir.join(file)).unwrap(), want);
    assert_eq!(m.stats()["metrics"]["passthrough_opens"], 1);
    assert_eq!(m.stats()["metrics"]["fetched_bytes"], 0);
    drop(m);
    let m = Mounted::new(&skiff, &image, &["--no-prefetch", "--no-passthrough"]);
    assert_eq!(read(&m.dir.join(file)).unwrap(), want);
    assert_eq!(m.stats()["metrics"]["passthrough_opens"], 0);
}
