//! `skiff snapshotter pull`: a skiff image into containerd, lazily, for
//! `ctr run`. containerd 1.6's `ctr image pull` fetches every blob into
//! its content store before it unpacks, and passes the snapshotter no
//! labels; its unpacker (the CRI's pull, nerdctl's) does better, and this
//! does what that unpacker does (as stargz's `ctr-remote image rpull`):
//! - the manifest and config go into containerd's content store, with
//!   the garbage-collection labels containerd's own pull sets;
//! - each layer is prepared through containerd's snapshots service with
//!   the labels the snapshotter needs (`containerd.io/snapshot.ref`, the
//!   layer's `containerd.io/snapshot/` annotations, and where the image
//!   was pulled from); skiff answers each "already exists", so no data
//!   blob is downloaded;
//! - the image record names the manifest, so `ctr run REF` finds it.
//!
//! The reference is the one pulled from now, never one baked into the
//! image: an image copied to another registry is pulled from there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use containerd_client::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AddResourceRequest, CreateImageRequest, CreateRequest, DeleteRequest, Image,
    Info as ContentInfo, Resource, UpdateImageRequest, UpdateRequest, WriteContentRequest,
};
use containerd_client::tonic::{self, Code, Request};
use containerd_client::types::Descriptor as CtrDescriptor;
use sha2::{Digest, Sha256};
use skiff_engine::Engine;
use skiff_format::mediatype::is_metadata_layer;

use crate::labels;

pub struct PullOptions {
    /// containerd's socket.
    pub containerd: PathBuf,
    pub namespace: String,
    /// The proxy plugin's name in containerd's config.
    pub snapshotter: String,
}

/// What a pull did.
#[derive(Debug, serde::Serialize)]
pub struct Pulled {
    pub reference: String,
    pub manifest: String,
    pub layers: usize,
    /// Layers skiff serves lazily (all of a skiff image's).
    pub lazy_layers: usize,
    /// Layers that were on the node already.
    pub present_layers: usize,
}

pub fn pull(engine: &Engine, reference: &str, opts: &PullOptions) -> anyhow::Result<Pulled> {
    let (repo, resolved) = engine.resolve_image(reference, None)?;
    if !resolved
        .manifest
        .layers
        .iter()
        .any(|l| is_metadata_layer(&l.media_type))
    {
        bail!(
            "{reference} is an ordinary OCI image, not a skiff image: pull it with `ctr image pull --snapshotter {} {reference}` (the snapshotter unpacks it as overlayfs would), or convert it with `skiff convert`",
            opts.snapshotter
        );
    }
    let name = reference
        .strip_prefix("docker://")
        .unwrap_or(reference)
        .to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    // The config comes from the registry while containerd is reached.
    let config_fetch = {
        let (repo, desc) = (repo.clone(), resolved.manifest.config.clone());
        rt.spawn_blocking(move || repo.read_blob(&desc))
    };
    rt.block_on(async {
        let channel = containerd_client::connect(&opts.containerd).await.with_context(|| {
            format!(
                "connecting to containerd at {}: is it running? (--containerd-address)",
                opts.containerd.display()
            )
        })?;
        let client = containerd_client::Client::from(channel);
        let ns = opts.namespace.as_str();
        let lease = format!("skiff-pull-{}", nanos());
        client
            .leases()
            .create(request(
                CreateRequest {
                    id: lease.clone(),
                    labels: HashMap::from([("containerd.io/gc.expire".into(), rfc3339(SystemTime::now() + Duration::from_secs(3600)))]),
                },
                ns,
                None,
            ))
            .await
            .map_err(|e| status_error("creating a lease", e))?;
        let result = async {
            let config = config_fetch
                .await
                .context("fetching the config")?
                .with_context(|| format!("fetching the config of {reference}"))?;
            let diff_ids =
                diff_ids(&config).with_context(|| format!("reading the config of {reference}"))?;
            if diff_ids.len() != resolved.manifest.layers.len() {
                bail!(
                    "the config of {reference} lists {} layers, its manifest {}: the image is broken; convert it again",
                    diff_ids.len(),
                    resolved.manifest.layers.len()
                );
            }
            let chains = chain_ids(&diff_ids);
            let source = repo.registry_location();
            let mut manifest_labels = HashMap::from([(
                "containerd.io/gc.ref.content.config".to_string(),
                resolved.manifest.config.digest.clone(),
            )]);
            for (i, l) in resolved.manifest.layers.iter().enumerate() {
                manifest_labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), l.digest.clone());
            }
            if let Some((host, repository)) = &source {
                manifest_labels.insert(format!("containerd.io/distribution.source.{host}"), repository.clone());
            }
            let top = chains.last().cloned().unwrap_or_default();
            let config_labels = HashMap::from([(format!("containerd.io/gc.ref.snapshot.{}", opts.snapshotter), top)]);
            tokio::try_join!(
                write_content(&client, ns, &lease, &resolved.manifest.config.digest, &config, config_labels),
                write_content(&client, ns, &lease, &resolved.descriptor.digest, &resolved.bytes, manifest_labels),
            )?;

            let mut lazy = 0;
            let mut present = 0;
            let mut parent = String::new();
            for (layer, chain) in resolved.manifest.layers.iter().zip(&chains) {
                let mut snapshots = client.snapshots();
                let stat = snapshots
                    .stat(request(
                        StatSnapshotRequest { snapshotter: opts.snapshotter.clone(), key: chain.clone() },
                        ns,
                        Some(&lease),
                    ))
                    .await;
                if stat.is_ok() {
                    // Hold it in this pull's lease: the garbage collector
                    // may otherwise take it (one an earlier, failed pull
                    // left) before the next layer names it as parent.
                    client
                        .leases()
                        .add_resource(request(
                            AddResourceRequest {
                                id: lease.clone(),
                                resource: Some(Resource {
                                    id: chain.clone(),
                                    r#type: format!("snapshots/{}", opts.snapshotter),
                                }),
                            },
                            ns,
                            None,
                        ))
                        .await
                        .map_err(|e| status_error("adding a layer to the pull's lease", e))?;
                    let held = client
                        .snapshots()
                        .stat(request(
                            StatSnapshotRequest {
                                snapshotter: opts.snapshotter.clone(),
                                key: chain.clone(),
                            },
                            ns,
                            Some(&lease),
                        ))
                        .await;
                    if held.is_ok() {
                        present += 1;
                        parent = chain.clone();
                        continue;
                    }
                }
                let mut labels: HashMap<String, String> = layer
                    .annotations
                    .iter()
                    .flatten()
                    .filter(|(k, _)| k.starts_with("containerd.io/snapshot/"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                labels.insert(labels::TARGET_REF.into(), chain.clone());
                labels.insert(labels::SKIFF_IMAGE_REF.into(), name.clone());
                labels.insert(labels::SKIFF_MANIFEST.into(), resolved.descriptor.digest.clone());
                let key = format!("extract-{}-skiff {chain}", nanos());
                let prepared = snapshots
                    .prepare(request(
                        PrepareSnapshotRequest {
                            snapshotter: opts.snapshotter.clone(),
                            key: key.clone(),
                            parent: parent.clone(),
                            labels,
                        },
                        ns,
                        Some(&lease),
                    ))
                    .await;
                match prepared {
                    Err(e) if e.code() == Code::AlreadyExists => lazy += 1,
                    Err(e) => return Err(status_error(&format!("preparing layer {} ({chain})", layer.digest), e)),
                    Ok(_) => {
                        let _ = snapshots
                            .remove(request(
                                RemoveSnapshotRequest { snapshotter: opts.snapshotter.clone(), key },
                                ns,
                                Some(&lease),
                            ))
                            .await;
                        bail!(
                            "snapshotter {:?} would have containerd download layer {}: is it skiff's? (`[proxy_plugins.{0}]` in containerd's config, docs/containerd.md)",
                            opts.snapshotter,
                            layer.digest
                        );
                    }
                }
                parent = chain.clone();
            }
            let image = Image {
                name: name.clone(),
                labels: HashMap::new(),
                target: Some(CtrDescriptor {
                    media_type: resolved.descriptor.media_type.clone(),
                    digest: resolved.descriptor.digest.clone(),
                    size: resolved.bytes.len() as i64,
                    annotations: HashMap::new(),
                }),
                created_at: None,
                updated_at: None,
            };
            let mut images = client.images();
            let created = images
                .create(request(CreateImageRequest { image: Some(image.clone()) }, ns, None))
                .await;
            match created {
                Ok(_) => {}
                Err(e) if e.code() == Code::AlreadyExists => {
                    images
                        .update(request(
                            UpdateImageRequest {
                                image: Some(image),
                                update_mask: Some(prost_types::FieldMask { paths: vec!["target".into()] }),
                            },
                            ns,
                            None,
                        ))
                        .await
                        .map_err(|e| status_error(&format!("updating the image record {name}"), e))?;
                }
                Err(e) => return Err(status_error(&format!("creating the image record {name}"), e)),
            }
            Ok(Pulled {
                reference: name.clone(),
                manifest: resolved.descriptor.digest.clone(),
                layers: chains.len(),
                lazy_layers: lazy,
                present_layers: present,
            })
        }
        .await;
        let _ = client
            .leases()
            .delete(request(DeleteRequest { id: lease, sync: false }, ns, None))
            .await;
        result
    })
}

/// Writes one small blob into containerd's content store in one commit,
/// or sets its labels if it is there already.
async fn write_content(
    client: &containerd_client::Client,
    ns: &str,
    lease: &str,
    digest: &str,
    bytes: &[u8],
    labels: HashMap<String, String>,
) -> anyhow::Result<()> {
    let req = WriteContentRequest {
        action: containerd_client::services::v1::WriteAction::Commit as i32,
        r#ref: format!("skiff-{digest}"),
        total: bytes.len() as i64,
        expected: digest.to_string(),
        offset: 0,
        data: bytes.to_vec(),
        labels: labels.clone(),
    };
    let stream = tokio_stream::iter(vec![req]);
    let written = match client
        .content()
        .write(request(stream, ns, Some(lease)))
        .await
    {
        Ok(mut responses) => responses.get_mut().message().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Code::AlreadyExists => {
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            client
                .content()
                .update(request(
                    UpdateRequest {
                        info: Some(ContentInfo {
                            digest: digest.to_string(),
                            labels,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    },
                    ns,
                    Some(lease),
                ))
                .await
                .map_err(|e| {
                    status_error(
                        &format!("labelling {digest} in containerd's content store"),
                        e,
                    )
                })?;
            Ok(())
        }
        Err(e) => Err(status_error(
            &format!("writing {digest} to containerd's content store"),
            e,
        )),
    }
}

fn request<T>(message: T, namespace: &str, lease: Option<&str>) -> Request<T> {
    let mut req = Request::new(message);
    let md = req.metadata_mut();
    if let Ok(v) = namespace.parse() {
        md.insert("containerd-namespace", v);
    }
    if let Some(Ok(v)) = lease.map(str::parse) {
        md.insert("containerd-lease", v);
    }
    req
}

fn status_error(what: &str, e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: containerd answered {:?}: {}",
        e.code(),
        e.message()
    )
}

fn diff_ids(config: &[u8]) -> anyhow::Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(config)?;
    let ids = v["rootfs"]["diff_ids"]
        .as_array()
        .context("no rootfs.diff_ids")?
        .iter()
        .map(|d| {
            d.as_str()
                .map(str::to_string)
                .context("a diff_id is not a string")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ids)
}

/// containerd's chain IDs: the first layer's diff ID, then
/// `sha256(parent chain + " " + diff ID)` for each next layer.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex(&Sha256::digest(format!("{parent} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

use skiff_engine::record::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_containerd() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        let want = format!(
            "sha256:{}",
            hex(&Sha256::digest(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(c[1], want);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_300_000);
        assert_eq!(rfc3339(t), "2026-12-03T12:13:20Z");
    }
}
