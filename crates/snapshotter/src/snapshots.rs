//! The snapshots themselves: their records (`ROOT/snapshotter/metadata.json`,
//! replaced whole on each change, so a kill at any point leaves the old or
//! the new), their directories (`ROOT/snapshotter/snapshots/ID/{fs,work}`),
//! and the mounts containerd gets for them. Synchronous; the gRPC service
//! calls it from blocking threads.
//!
//! Three kinds of content:
//! - `Local`: an ordinary layer or a container's writable layer, a
//!   directory that containerd unpacks into or a container writes, as
//!   containerd's overlayfs snapshotter keeps them;
//! - `SkiffBlob`: a skiff image's data layer, committed empty at once, so
//!   containerd never downloads it: its chunks are fetched by the mount;
//! - `SkiffImage`: a skiff image's metadata layer, the engine's lazy,
//!   verified mount of the whole image. It is the only lower layer a
//!   container of that image needs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use containerd_snapshots::api::types::Mount;
use containerd_snapshots::{Info, Kind, Usage};
use serde::{Deserialize, Serialize};
use skiff_engine::{Engine, EngineError};
use tonic::Status;

use crate::filter::{Fields, Filters};
use crate::labels::{self, SkiffLayer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    View,
    Active,
    Committed,
}

impl SnapshotKind {
    fn name(self) -> &'static str {
        match self {
            SnapshotKind::View => "view",
            SnapshotKind::Active => "active",
            SnapshotKind::Committed => "committed",
        }
    }

    fn api(self) -> Kind {
        match self {
            SnapshotKind::View => Kind::View,
            SnapshotKind::Active => Kind::Active,
            SnapshotKind::Committed => Kind::Committed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Local,
    SkiffBlob,
    SkiffImage { reference: String, tree: PathBuf },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: u64,
    pub kind: SnapshotKind,
    pub parent: String,
    pub labels: HashMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub content: Content,
    /// What a committed local layer holds: (bytes, inodes).
    #[serde(default)]
    pub usage: Option<(i64, i64)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    next_id: u64,
    snapshots: BTreeMap<String, Snapshot>,
}

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    pub lazy_layers: AtomicU64,
    pub not_lazy_layers: AtomicU64,
    pub remounts: AtomicU64,
    pub errors: AtomicU64,
}

pub struct Snapshots {
    dir: PathBuf,
    engine: Engine,
    state: Mutex<State>,
    pub counters: Counters,
}

impl Snapshots {
    /// Opens the snapshots under `engine`'s root, as a previous run left
    /// them. A record file that cannot be read stops the start: serving
    /// without it would lose every snapshot containerd knows.
    pub fn open(engine: Engine, root: &Path) -> anyhow::Result<Self> {
        let dir = root.join("snapshotter");
        std::fs::create_dir_all(dir.join("snapshots"))
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        let path = dir.join("metadata.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a snapshot record file ({e}); restore it, or move it away to start with no snapshots (containerd then pulls its images again)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        Ok(Snapshots {
            dir,
            engine,
            state: Mutex::new(state),
            counters: Counters::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the records as they were
        // last saved: keep serving them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.dir.join("snapshots").join(id.to_string())
    }

    fn save(&self, st: &State) -> Result<(), Status> {
        let path = self.dir.join("metadata.json");
        let tmp = self.dir.join("metadata.json.new");
        let bytes = serde_json::to_vec(st).map_err(|e| Status::internal(e.to_string()))?;
        write_synced(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| io_status(&format!("saving {}", path.display()), &e))
    }

    /// Re-establishes every image mount that died (its daemon was killed,
    /// the node rebooted), for new containers. Errors are logged: the
    /// next Prepare or Mounts of that image tries again.
    pub fn recover(&self) {
        let images: Vec<(String, String)> = self
            .lock()
            .snapshots
            .iter()
            .filter_map(|(name, s)| match &s.content {
                Content::SkiffImage { reference, .. } => Some((name.clone(), reference.clone())),
                _ => None,
            })
            .collect();
        for (name, reference) in images {
            if let Err(e) = self.ensure_image(&reference) {
                tracing::warn!(snapshot = %name, "re-establishing the image mount: {}", e.message());
            }
        }
    }

    fn ensure_image(&self, reference: &str) -> Result<PathBuf, Status> {
        self.engine
            .ensure_image_mount(reference, None, None, None)
            .map(|m| m.tree)
            .map_err(|e| engine_status(&format!("mounting {reference}"), e))
    }

    pub fn prepare(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
        kind: SnapshotKind,
    ) -> Result<Vec<Mount>, Status> {
        {
            let st = self.lock();
            if st.snapshots.contains_key(&key) {
                return Err(Status::already_exists(format!(
                    "snapshot {key:?} already exists"
                )));
            }
            check_parent(&st, &parent)?;
        }
        let target = labels.get(labels::TARGET_REF).cloned();
        if let (Some(target), SnapshotKind::Active) = (&target, kind) {
            if let Some(layer) = SkiffLayer::of(&labels) {
                return Err(self.prepare_remote(target, &parent, labels.clone(), layer));
            }
        }
        // containerd unpacks a layer into a snapshot keyed
        // `NS/SEQ/extract-… CHAINID`, with labels or not (`ctr image pull`
        // gives none).
        let unpacking = kind == SnapshotKind::Active
            && (target.is_some()
                || key
                    .rsplit('/')
                    .next()
                    .is_some_and(|k| k.starts_with("extract-") && k.contains(' ')));
        let mut labels = labels;
        if unpacking {
            let layer = target
                .as_deref()
                .or_else(|| key.rsplit(' ').next())
                .unwrap_or("");
            tracing::info!(
                layer,
                "not lazy: an ordinary OCI layer; containerd downloads and unpacks it"
            );
            self.counters
                .not_lazy_layers
                .fetch_add(1, Ordering::Relaxed);
            labels.insert(
                labels::SKIFF_NOT_LAZY.into(),
                "an ordinary OCI layer".into(),
            );
        }
        let mut st = self.lock();
        if st.snapshots.contains_key(&key) {
            return Err(Status::already_exists(format!(
                "snapshot {key:?} already exists"
            )));
        }
        check_parent(&st, &parent)?;
        let id = st.next_id;
        st.next_id += 1;
        let dir = self.snapshot_dir(id);
        let made = std::fs::create_dir_all(dir.join("fs"))
            .and_then(|_| match kind {
                SnapshotKind::Active => std::fs::create_dir_all(dir.join("work")),
                _ => Ok(()),
            })
            .map_err(|e| io_status(&format!("creating {}", dir.display()), &e));
        let now = SystemTime::now();
        st.snapshots.insert(
            key.clone(),
            Snapshot {
                id,
                kind,
                parent,
                labels,
                created: now,
                updated: now,
                content: Content::Local,
                usage: None,
            },
        );
        if let Err(e) = made.and_then(|_| self.save(&st)) {
            st.snapshots.remove(&key);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let (mounts, images) = mounts_of(&st, &key, &self.dir)?;
        drop(st);
        for reference in images {
            self.ensure_image(&reference)?;
        }
        Ok(mounts)
    }

    /// Serves a skiff layer without containerd: answers AlreadyExists (as
    /// containerd expects of a remote layer) once a committed snapshot
    /// named `target` with this parent holds it, or the error that stops it.
    fn prepare_remote(
        &self,
        target: &str,
        parent: &str,
        mut labels: HashMap<String, String>,
        layer: SkiffLayer,
    ) -> Status {
        let exists =
            || Status::already_exists(format!("target snapshot {target:?}: already exists"));
        if let Some(s) = self.lock().snapshots.get(target) {
            if s.parent == parent && s.kind == SnapshotKind::Committed {
                return exists();
            }
            return Status::already_exists(format!(
                "snapshot {target:?} exists with another parent ({:?}, not {parent:?})",
                s.parent
            ));
        }
        let content = match layer {
            SkiffLayer::Blob => Content::SkiffBlob,
            SkiffLayer::Metadata => {
                let Some(reference) = labels::image_reference(&labels) else {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    return Status::failed_precondition(format!(
                        "layer {target} is a skiff image's metadata, but its puller named no image, so skiff cannot fetch it lazily: pull with `skiff snapshotter pull REF`, or through the CRI with disable_snapshot_annotations = false (docs/containerd.md)"
                    ));
                };
                match self.ensure_image(&reference) {
                    Ok(tree) => Content::SkiffImage { reference, tree },
                    Err(e) => {
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        return e;
                    }
                }
            }
        };
        labels.insert(
            labels::SKIFF_REMOTE.into(),
            match content {
                Content::SkiffImage { .. } => "image",
                _ => "blob",
            }
            .into(),
        );
        let mut st = self.lock();
        if st.snapshots.contains_key(target) {
            return exists();
        }
        let id = st.next_id;
        st.next_id += 1;
        let dir = self.snapshot_dir(id);
        if let Err(e) = std::fs::create_dir_all(dir.join("fs")) {
            return io_status(&format!("creating {}", dir.display()), &e);
        }
        let now = SystemTime::now();
        st.snapshots.insert(
            target.to_string(),
            Snapshot {
                id,
                kind: SnapshotKind::Committed,
                parent: parent.to_string(),
                labels,
                created: now,
                updated: now,
                content,
                usage: Some((0, 0)),
            },
        );
        if let Err(e) = self.save(&st) {
            st.snapshots.remove(target);
            let _ = std::fs::remove_dir_all(&dir);
            return e;
        }
        self.counters.lazy_layers.fetch_add(1, Ordering::Relaxed);
        tracing::info!(layer = %target, kind = ?layer, "lazy: served by skiff, never downloaded");
        exists()
    }

    pub fn commit(
        &self,
        name: String,
        key: String,
        labels: HashMap<String, String>,
    ) -> Result<(), Status> {
        let mut st = self.lock();
        let s = get(&st, &key)?;
        if s.kind != SnapshotKind::Active {
            return Err(Status::failed_precondition(format!(
                "snapshot {key:?} is {}; only an active snapshot can be committed",
                s.kind.name()
            )));
        }
        if st.snapshots.contains_key(&name) {
            return Err(Status::already_exists(format!(
                "snapshot {name:?} already exists"
            )));
        }
        let usage = disk_usage(&self.snapshot_dir(s.id).join("fs"));
        let mut s = st.snapshots.remove(&key).expect("checked above");
        let old = s.clone();
        s.kind = SnapshotKind::Committed;
        s.labels.extend(labels);
        s.updated = SystemTime::now();
        s.usage = Some(usage);
        st.snapshots.insert(name.clone(), s);
        if let Err(e) = self.save(&st) {
            st.snapshots.remove(&name);
            st.snapshots.insert(key, old);
            return Err(e);
        }
        let _ = std::fs::remove_dir_all(self.snapshot_dir(st.snapshots[&name].id).join("work"));
        Ok(())
    }

    pub fn remove(&self, key: String) -> Result<(), Status> {
        let mut st = self.lock();
        get(&st, &key)?;
        let children: Vec<&String> = st
            .snapshots
            .iter()
            .filter(|(_, s)| s.parent == key)
            .map(|(n, _)| n)
            .collect();
        if !children.is_empty() {
            return Err(Status::failed_precondition(format!(
                "snapshot {key:?} is the parent of {children:?}; remove those first"
            )));
        }
        let s = st.snapshots.remove(&key).expect("checked above");
        if let Err(e) = self.save(&st) {
            st.snapshots.insert(key, s);
            return Err(e);
        }
        let image_still_used = match &s.content {
            Content::SkiffImage { tree, .. } => st
                .snapshots
                .values()
                .any(|o| matches!(&o.content, Content::SkiffImage { tree: t, .. } if t == tree)),
            _ => true,
        };
        drop(st);
        let dir = self.snapshot_dir(s.id);
        if let Err(e) = remove_tree(&dir) {
            tracing::warn!(dir = %dir.display(), "removing a snapshot's directory: {e}");
        }
        if let (Content::SkiffImage { reference, .. }, false) = (&s.content, image_still_used) {
            if let Err(e) = self.engine.remove_image(reference, true) {
                tracing::warn!(image = %reference, "releasing the image mount: {e}");
            }
            skiff_engine::helper::reap_exited_helpers();
        }
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Info, Status> {
        let st = self.lock();
        Ok(info(key, get(&st, key)?))
    }

    /// Updates labels, the only field containerd changes: all of them, or
    /// those `fieldpaths` names (`labels.KEY`; one named but absent is
    /// removed).
    pub fn update(&self, new: Info, fieldpaths: Option<Vec<String>>) -> Result<Info, Status> {
        let mut st = self.lock();
        let old = get(&st, &new.name)?.clone();
        let mut s = old.clone();
        match fieldpaths.filter(|f| !f.is_empty()) {
            None => s.labels = new.labels,
            Some(paths) => {
                for p in paths {
                    if p == "labels" {
                        s.labels = new.labels.clone();
                    } else if let Some(k) = p.strip_prefix("labels.") {
                        match new.labels.get(k) {
                            Some(v) => s.labels.insert(k.to_string(), v.clone()),
                            None => s.labels.remove(k),
                        };
                    } else {
                        return Err(Status::invalid_argument(format!(
                            "cannot update {p:?} of snapshot {:?}: only labels change",
                            new.name
                        )));
                    }
                }
            }
        }
        s.updated = SystemTime::now();
        st.snapshots.insert(new.name.clone(), s);
        if let Err(e) = self.save(&st) {
            st.snapshots.insert(new.name.clone(), old);
            return Err(e);
        }
        Ok(info(&new.name, &st.snapshots[&new.name]))
    }

    pub fn usage(&self, key: &str) -> Result<Usage, Status> {
        let (id, kind, usage) = {
            let st = self.lock();
            let s = get(&st, key)?;
            (s.id, s.kind, s.usage)
        };
        let (size, inodes) = match (kind, usage) {
            (SnapshotKind::Committed, Some(u)) => u,
            _ => disk_usage(&self.snapshot_dir(id).join("fs")),
        };
        Ok(Usage { size, inodes })
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>, Status> {
        let (mounts, images) = mounts_of(&self.lock(), key, &self.dir)?;
        for reference in images {
            self.ensure_image(&reference)?;
        }
        Ok(mounts)
    }

    pub fn list(&self, filters: &[String]) -> Result<Vec<Info>, Status> {
        let filters = Filters::parse(filters).map_err(Status::invalid_argument)?;
        let st = self.lock();
        Ok(st
            .snapshots
            .iter()
            .filter(|(name, s)| {
                filters.matches(&Fields {
                    name,
                    parent: &s.parent,
                    kind: s.kind.name(),
                    labels: &s.labels,
                })
            })
            .map(|(name, s)| info(name, s))
            .collect())
    }

    /// Removes directories that no snapshot owns (left by a kill between
    /// a directory's creation and its record, or a record's removal and
    /// its directory's).
    pub fn cleanup(&self) -> Result<(), Status> {
        let st = self.lock();
        let owned: std::collections::HashSet<String> =
            st.snapshots.values().map(|s| s.id.to_string()).collect();
        let dir = self.dir.join("snapshots");
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| io_status(&format!("listing {}", dir.display()), &e))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !owned.contains(&name) {
                if let Err(err) = remove_tree(&e.path()) {
                    tracing::warn!(dir = %e.path().display(), "cleaning up: {err}");
                }
            }
        }
        Ok(())
    }

    /// Every snapshot, for the metrics endpoint and `skiff images`.
    pub fn all(&self) -> Vec<(String, Snapshot)> {
        self.lock()
            .snapshots
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

fn get<'a>(st: &'a State, key: &str) -> Result<&'a Snapshot, Status> {
    st.snapshots
        .get(key)
        .ok_or_else(|| Status::not_found(format!("snapshot {key:?} does not exist")))
}

fn check_parent(st: &State, parent: &str) -> Result<(), Status> {
    if parent.is_empty() {
        return Ok(());
    }
    match st.snapshots.get(parent) {
        None => Err(Status::not_found(format!(
            "parent snapshot {parent:?} does not exist: pull the image again (containerd's snapshot records and skiff's disagree)"
        ))),
        Some(p) if p.kind != SnapshotKind::Committed => Err(Status::failed_precondition(format!(
            "parent snapshot {parent:?} is {}, not committed",
            p.kind.name()
        ))),
        Some(_) => Ok(()),
    }
}

fn info(name: &str, s: &Snapshot) -> Info {
    Info {
        kind: s.kind.api(),
        name: name.to_string(),
        parent: s.parent.clone(),
        labels: s.labels.clone(),
        created_at: s.created,
        updated_at: s.updated,
    }
}

/// The mounts of snapshot `key`, as containerd's overlayfs snapshotter
/// gives them (lower directories nearest first), and the image mounts
/// they rely on. An image mount is the whole image: the layers under it
/// (its empty blob layers) add nothing.
fn mounts_of(st: &State, key: &str, dir: &Path) -> Result<(Vec<Mount>, Vec<String>), Status> {
    let s = get(st, key)?;
    let fs = |id: u64| dir.join("snapshots").join(id.to_string()).join("fs");
    let mut lowers: Vec<PathBuf> = Vec::new();
    let mut images = Vec::new();
    let mut own_image = None;
    match &s.content {
        Content::SkiffImage { reference, tree } => {
            images.push(reference.clone());
            own_image = Some(tree.clone());
        }
        Content::SkiffBlob => {}
        Content::Local => {}
    }
    let mut parent = s.parent.clone();
    let mut seen = 0;
    while !parent.is_empty() && own_image.is_none() {
        let p = st.snapshots.get(&parent).ok_or_else(|| {
            Status::internal(format!(
                "snapshot {key:?} has a missing ancestor {parent:?}"
            ))
        })?;
        match &p.content {
            Content::Local => lowers.push(fs(p.id)),
            Content::SkiffBlob => {}
            Content::SkiffImage { reference, tree } => {
                lowers.push(tree.clone());
                images.push(reference.clone());
                break;
            }
        }
        parent = p.parent.clone();
        seen += 1;
        if seen > st.snapshots.len() {
            return Err(Status::internal(format!(
                "snapshot {key:?} has a parent loop"
            )));
        }
    }
    let bind = |src: &Path, rw: bool| Mount {
        r#type: "bind".into(),
        source: src.display().to_string(),
        target: String::new(),
        options: vec![if rw { "rw" } else { "ro" }.into(), "rbind".into()],
    };
    let lowerdir = |l: &[PathBuf]| {
        let joined: Vec<String> = l.iter().map(|p| p.display().to_string()).collect();
        format!("lowerdir={}", joined.join(":"))
    };
    let overlay = |options: Vec<String>| Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options,
    };
    let mount = match (s.kind, own_image) {
        (_, Some(tree)) => bind(&tree, false),
        (SnapshotKind::Active, _) if lowers.is_empty() => bind(&fs(s.id), true),
        (SnapshotKind::Active, _) => {
            let d = dir.join("snapshots").join(s.id.to_string());
            overlay(vec![
                "index=off".into(),
                format!("workdir={}", d.join("work").display()),
                format!("upperdir={}", d.join("fs").display()),
                lowerdir(&lowers),
            ])
        }
        (SnapshotKind::View, _) => match lowers.as_slice() {
            [] => bind(&fs(s.id), false),
            [one] => bind(one, false),
            many => overlay(vec![lowerdir(many)]),
        },
        (SnapshotKind::Committed, _) => {
            lowers.insert(0, fs(s.id));
            match lowers.as_slice() {
                [one] => bind(one, false),
                many => overlay(vec![lowerdir(many)]),
            }
        }
    };
    Ok((vec![mount], images))
}

/// Bytes (in blocks) and inodes under `dir`, on its own filesystem, each
/// hard-linked inode once.
fn disk_usage(dir: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = top.dev();
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0i64, 0i64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev || !seen.insert(m.ino()) {
                continue;
            }
            bytes += (m.blocks() * 512) as i64;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// Removes a snapshot's directory, detaching anything left mounted in
/// it first (a container's overlay that containerd did not unmount).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for sub in ["fs", "work"] {
        let _ = rustix::mount::unmount(dir.join(sub), rustix::mount::UnmountFlags::DETACH);
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// An I/O error as gRPC: a full disk is RESOURCE_EXHAUSTED, naming where.
pub fn io_status(context: &str, e: &std::io::Error) -> Status {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        return Status::resource_exhausted(format!(
            "{context}: the disk is full; free space under the snapshotter's --root"
        ));
    }
    Status::internal(format!("{context}: {e}"))
}

/// An engine error as gRPC, by kind, on one line (containerd shows
/// it as one): an image that fails verification is FAILED_PRECONDITION,
/// a registry (or a mount daemon that cannot reach it) UNAVAILABLE, a
/// full disk RESOURCE_EXHAUSTED. containerd passes these codes on; others
/// become "unknown".
pub fn engine_status(context: &str, e: EngineError) -> Status {
    let helper = matches!(e, EngineError::Helper(_));
    let verification = match &e {
        EngineError::Helper(t) => t.contains("(exit status: 3)"),
        EngineError::Store { .. } => true,
        _ => false,
    };
    // A blob or manifest the registry does not have: retrying will not help.
    let missing = match &e {
        EngineError::Helper(t) => t.contains(" not found"),
        EngineError::Oci {
            source: skiff_oci::error::OciError::NotFound { .. },
            ..
        } => true,
        _ => false,
    };
    let detail = e.to_string();
    // A helper's error already names what it was mounting.
    let text = if helper {
        detail
    } else {
        format!("{context}: {detail}")
    };
    let text = one_line(&text);
    let full = text.contains("No space left on device") || text.contains("disk is full");
    match e {
        _ if full => {
            Status::resource_exhausted(format!("{text}; free space under the snapshotter's --root"))
        }
        _ if verification => Status::failed_precondition(format!(
            "{text}; the image at the registry does not match its digests: push it again"
        )),
        _ if missing => Status::failed_precondition(format!(
            "{text}; the registry lacks part of the image: push it again, or pull it from where it is whole"
        )),
        EngineError::Invalid(_) => Status::invalid_argument(text),
        EngineError::NotFound(_) => Status::not_found(text),
        EngineError::Conflict(_) => Status::failed_precondition(text),
        EngineError::Oci { .. } | EngineError::Helper(_) => Status::unavailable(text),
        _ => Status::internal(text),
    }
}

/// A multi-line message (a helper's log tail) as one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("skiff: error: ")
                .trim_end_matches(':')
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(root: &Path) -> Snapshots {
        let engine = Engine::new(skiff_engine::EngineConfig {
            root: root.to_path_buf(),
            registry: Default::default(),
            helper: PathBuf::from("/nonexistent/skiff"),
            cache_size: skiff_engine::DEFAULT_CACHE_SIZE,
            image_idle_timeout: None,
        })
        .unwrap();
        Snapshots::open(engine, root).unwrap()
    }

    fn opt<'a>(m: &'a Mount, prefix: &str) -> Option<&'a str> {
        m.options.iter().find_map(|o| o.strip_prefix(prefix))
    }

    #[test]
    fn local_layers_stack_as_overlayfs_would_and_survive_a_reopen() {
        let root = tempfile::tempdir().unwrap();
        let s = open(root.path());
        let none = HashMap::new;
        let m = s
            .prepare(
                "ns/1/extract-1 sha256:a".into(),
                "".into(),
                none(),
                SnapshotKind::Active,
            )
            .unwrap();
        assert_eq!(m[0].r#type, "bind");
        assert_eq!(m[0].options, ["rw", "rbind"]);
        std::fs::write(Path::new(&m[0].source).join("f"), b"layer one").unwrap();
        s.commit(
            "ns/1/sha256:a".into(),
            "ns/1/extract-1 sha256:a".into(),
            none(),
        )
        .unwrap();
        assert_eq!(
            s.counters.not_lazy_layers.load(Ordering::Relaxed),
            1,
            "an unpack is counted"
        );
        assert!(s.stat("ns/1/extract-1 sha256:a").is_err());
        let l2 = s
            .prepare(
                "ns/2/extract-2 sha256:b".into(),
                "ns/1/sha256:a".into(),
                none(),
                SnapshotKind::Active,
            )
            .unwrap();
        assert_eq!(l2[0].r#type, "overlay");
        let upper = opt(&l2[0], "upperdir=").unwrap().to_string();
        std::fs::write(Path::new(&upper).join("g"), b"layer two").unwrap();
        s.commit(
            "ns/2/sha256:b".into(),
            "ns/2/extract-2 sha256:b".into(),
            none(),
        )
        .unwrap();
        let c = s
            .prepare(
                "ns/3/ctr".into(),
                "ns/2/sha256:b".into(),
                none(),
                SnapshotKind::Active,
            )
            .unwrap();
        let lowers: Vec<String> = opt(&c[0], "lowerdir=")
            .unwrap()
            .split(':')
            .map(str::to_string)
            .collect();
        assert_eq!(lowers.len(), 2);
        assert!(
            Path::new(&lowers[0]).join("g").exists(),
            "nearest parent first"
        );
        assert!(Path::new(&lowers[1]).join("f").exists());
        let v = s
            .prepare(
                "ns/4/view".into(),
                "ns/1/sha256:a".into(),
                none(),
                SnapshotKind::View,
            )
            .unwrap();
        assert_eq!(
            (v[0].r#type.as_str(), v[0].options[0].as_str()),
            ("bind", "ro")
        );

        // Errors containerd relies on.
        let e = s
            .prepare("ns/3/ctr".into(), "".into(), none(), SnapshotKind::Active)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists);
        let e = s
            .prepare("k".into(), "missing".into(), none(), SnapshotKind::Active)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(
            e.message().contains("\"missing\" does not exist"),
            "{}",
            e.message()
        );
        let e = s
            .prepare("k".into(), "ns/3/ctr".into(), none(), SnapshotKind::Active)
            .unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::FailedPrecondition,
            "an active parent"
        );
        let e = s.remove("ns/1/sha256:a".into()).unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::FailedPrecondition,
            "a parent of others"
        );
        let e = s
            .commit("x".into(), "ns/1/sha256:a".into(), none())
            .unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::FailedPrecondition,
            "committing a committed one"
        );

        // Labels: replaced, set and removed by field path.
        let mut info = s.stat("ns/2/sha256:b").unwrap();
        info.labels = HashMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
        s.update(info, None).unwrap();
        let mut info = s.stat("ns/2/sha256:b").unwrap();
        info.labels = HashMap::from([("c".into(), "3".into())]);
        let out = s
            .update(info, Some(vec!["labels.c".into(), "labels.a".into()]))
            .unwrap();
        assert_eq!(
            out.labels,
            HashMap::from([("b".into(), "2".into()), ("c".into(), "3".into())])
        );
        let listed = s.list(&["labels.c==3".into()]).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(s.usage("ns/1/sha256:a").unwrap().inodes >= 1);
        let before: Vec<String> = s.list(&[]).unwrap().into_iter().map(|i| i.name).collect();
        drop(s);

        // A new process finds them all; removal leaves no directory behind.
        let s = open(root.path());
        let after: Vec<String> = s.list(&[]).unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(before, after);
        assert_eq!(s.mounts("ns/3/ctr").unwrap(), c);
        std::fs::create_dir_all(root.path().join("snapshotter/snapshots/999/fs")).unwrap();
        s.cleanup().unwrap();
        assert!(
            !root.path().join("snapshotter/snapshots/999").exists(),
            "an unowned directory goes"
        );
        for k in ["ns/4/view", "ns/3/ctr", "ns/2/sha256:b", "ns/1/sha256:a"] {
            s.remove(k.into()).unwrap();
        }
        assert_eq!(
            std::fs::read_dir(root.path().join("snapshotter/snapshots"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn skiff_layers_are_never_downloaded_and_say_what_they_need() {
        let root = tempfile::tempdir().unwrap();
        let s = open(root.path());
        let blob = HashMap::from([
            (labels::TARGET_REF.to_string(), "sha256:c1".to_string()),
            (labels::SKIFF_LAYER.to_string(), "blob".to_string()),
        ]);
        let e = s
            .prepare(
                "ns/1/extract-1 sha256:c1".into(),
                "".into(),
                blob.clone(),
                SnapshotKind::Active,
            )
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists);
        let found = s
            .list(&[r#"labels."containerd.io/snapshot.ref"==sha256:c1,parent=="""#.into()])
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Committed);
        assert_eq!(found[0].labels[labels::SKIFF_REMOTE], "blob");
        // Another namespace pulling the same layer finds it.
        let e = s
            .prepare(
                "ns2/1/extract-9 sha256:c1".into(),
                "".into(),
                blob,
                SnapshotKind::Active,
            )
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists);
        // A metadata layer whose puller named no image: a clear refusal.
        let meta = HashMap::from([
            (labels::TARGET_REF.to_string(), "sha256:c2".to_string()),
            (labels::SKIFF_LAYER.to_string(), "metadata".to_string()),
        ]);
        let e = s
            .prepare(
                "ns/2/extract-2 sha256:c2".into(),
                "sha256:c1".into(),
                meta,
                SnapshotKind::Active,
            )
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("skiff snapshotter pull"),
            "{}",
            e.message()
        );
        assert!(s.stat("sha256:c2").is_err());
        assert_eq!(s.counters.lazy_layers.load(Ordering::Relaxed), 1);
    }
}

/// What the snapshotter holds for containerd, by how it was served, as
/// `skiff images` shows it (read from the record file, without a server).
#[derive(Debug, Default, serde::Serialize)]
pub struct LayerSummary {
    /// Layers skiff serves (data layers and image mounts).
    pub lazy: usize,
    /// Committed layers containerd downloaded and unpacked itself.
    pub not_lazy: usize,
    pub not_lazy_bytes: i64,
}

pub fn layer_summary(root: &Path) -> Option<LayerSummary> {
    let bytes = std::fs::read(root.join("snapshotter").join("metadata.json")).ok()?;
    let st: State = serde_json::from_slice(&bytes).ok()?;
    let mut sum = LayerSummary::default();
    for s in st.snapshots.values() {
        match (&s.content, s.kind) {
            (Content::SkiffBlob | Content::SkiffImage { .. }, _) => sum.lazy += 1,
            (Content::Local, SnapshotKind::Committed)
                if s.labels.contains_key(labels::SKIFF_NOT_LAZY) =>
            {
                sum.not_lazy += 1;
                sum.not_lazy_bytes += s.usage.map_or(0, |u| u.0);
            }
            _ => {}
        }
    }
    Some(sum)
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_codes_containerd_passes_on() {
        let missing = EngineError::Helper(
            "mounting r@d failed: the image mount daemon exited (exit status: 1) before it was ready:\nskiff: error: blob sha256:aa in deb not found (is the image on h?)".into(),
        );
        let s = engine_status("mounting r@d", missing);
        assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{}", s.message());
        assert!(!s.message().contains('\n'));
        let corrupt = EngineError::Helper(
            "the image mount daemon exited (exit status: 3) before it was ready:\nx".into(),
        );
        assert_eq!(
            engine_status("m", corrupt).code(),
            tonic::Code::FailedPrecondition
        );
        let down = EngineError::Helper("the image mount daemon exited (exit status: 1) before it was ready:\nconnection refused".into());
        assert_eq!(engine_status("m", down).code(), tonic::Code::Unavailable);
    }
}
