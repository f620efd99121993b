//! The gRPC face: containerd's snapshots API (through
//! `containerd-snapshots`), each call run on a blocking thread, since the
//! engine mounts images with blocking I/O and child processes.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_snapshots::api::types::Mount;
use containerd_snapshots::{tonic, Info, Snapshotter, Usage};
use tonic::Status;

use crate::snapshots::{SnapshotKind, Snapshots};

pub struct Service {
    pub snapshots: Arc<Snapshots>,
}

impl Service {
    async fn blocking<T: Send + 'static>(
        &self,
        call: &'static str,
        f: impl FnOnce(&Snapshots) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let s = self.snapshots.clone();
        let r = tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(|e| Status::internal(format!("{call} failed inside skiff: {e}")))?;
        if let Err(e) = &r {
            if e.code() != tonic::Code::AlreadyExists && e.code() != tonic::Code::NotFound {
                tracing::warn!(call, code = ?e.code(), "{}", e.message());
            }
        }
        r
    }
}

#[tonic::async_trait]
impl Snapshotter for Service {
    type Error = Status;

    async fn stat(&self, key: String) -> Result<Info, Status> {
        self.blocking("stat", move |s| s.stat(&key)).await
    }

    async fn update(&self, info: Info, fieldpaths: Option<Vec<String>>) -> Result<Info, Status> {
        self.blocking("update", move |s| s.update(info, fieldpaths))
            .await
    }

    async fn usage(&self, key: String) -> Result<Usage, Status> {
        self.blocking("usage", move |s| s.usage(&key)).await
    }

    async fn mounts(&self, key: String) -> Result<Vec<Mount>, Status> {
        self.blocking("mounts", move |s| s.mounts(&key)).await
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Status> {
        tracing::debug!(%key, %parent, ?labels, "prepare");
        self.blocking("prepare", move |s| {
            s.prepare(key, parent, labels, SnapshotKind::Active)
        })
        .await
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Status> {
        self.blocking("view", move |s| {
            s.prepare(key, parent, labels, SnapshotKind::View)
        })
        .await
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        labels: HashMap<String, String>,
    ) -> Result<(), Status> {
        tracing::debug!(%name, %key, "commit");
        self.blocking("commit", move |s| s.commit(name, key, labels))
            .await
    }

    async fn remove(&self, key: String) -> Result<(), Status> {
        tracing::debug!(%key, "remove");
        self.blocking("remove", move |s| s.remove(key)).await
    }

    async fn clear(&self) -> Result<(), Status> {
        self.blocking("cleanup", |s| s.cleanup()).await
    }

    type InfoStream = futures::stream::Iter<std::vec::IntoIter<Result<Info, Status>>>;

    async fn list(
        &self,
        _snapshotter: String,
        filters: Vec<String>,
    ) -> Result<Self::InfoStream, Status> {
        let infos = self.blocking("list", move |s| s.list(&filters)).await?;
        Ok(futures::stream::iter(
            infos.into_iter().map(Ok).collect::<Vec<_>>(),
        ))
    }
}
