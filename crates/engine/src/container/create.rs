//! Creating a container: the checks, its image mount, its record, its
//! writable layer and its spec. Nothing runs yet.

use std::path::PathBuf;

use oci_spec::runtime::Spec;
use skiff_sandbox::rootfs::{self, OverlayDirs};
use skiff_sandbox::RootKind;

use crate::error::{EngineError, IoContext, Result};
use crate::record::{self, Record, Status};
use crate::request::{parse_signal, Placement, RunRequest};
use crate::{root_dir, Engine};

/// A created container, ready for [`Engine::supervise`] or
/// [`Engine::start_detached`].
pub struct Created {
    pub record: Record,
    /// Its OCI runtime spec (also in `ROOT/containers/ID/config.json`).
    pub spec: Spec,
    /// The private image mount a `--record-trace` run has, released by
    /// [`Engine::finish_trace`] once the container exits.
    pub trace_mount: Option<PathBuf>,
    /// Set when its image was an ordinary OCI image, converted just now.
    pub conversion: Option<crate::image_store::Conversion>,
}

impl Engine {
    /// Checks `req`, mounts its image (shared) and prepares the container:
    /// its record (status created), writable layer and `config.json`.
    /// Anything that fails leaves nothing behind.
    pub fn create(&self, req: &RunRequest) -> Result<Created> {
        req.check()?;
        let id = record::new_id()?;
        // Every event of this container's creation names it.
        let _span = tracing::info_span!("container", id = &id[..12]).entered();
        let name = match &req.name {
            Some(n) => {
                if self.reap_orphans()?.iter().any(|r| &r.name == n) {
                    return Err(EngineError::Conflict(format!(
                        "a container named {n:?} exists; remove it with `skiff rm {n}` or pick another name"
                    )));
                }
                n.clone()
            }
            None => id[..12].to_string(),
        };
        let layer_size = req.layer_size()?;
        // Checked before anything is mounted, as the layer's size is.
        req.log_max_file_bytes()?;
        // Checked before anything is mounted; a bad profile fails here.
        let seccomp = req.seccomp_policy()?;
        let precompile = self.precompile_seccomp(seccomp.clone());
        let ensured = self.ensure_image_mount(
            &req.image,
            req.platform.as_ref(),
            req.userns,
            req.record_trace.as_deref(),
        );
        // Joined before the sandbox is created: its clone needs this
        // process single-threaded.
        if let Some(t) = precompile {
            let _ = t.join();
        }
        let mounted = ensured?;
        let (image_mount, config, conversion) = (mounted.tree, mounted.config, mounted.conversion);
        tracing::debug!("image mounted");
        let trace_mount = req.record_trace.as_ref().map(|_| image_mount.clone());
        let prepared = self.prepare(req, &id, name, &image_mount, &config, layer_size, seccomp);
        match prepared {
            Ok((record, spec)) => Ok(Created {
                record,
                spec,
                trace_mount,
                conversion,
            }),
            Err(e) => {
                // A recording mount is this run's alone.
                if let Some(t) = &trace_mount {
                    self.release_image_mount(t);
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        req: &RunRequest,
        id: &str,
        name: String,
        image_mount: &std::path::Path,
        config: &skiff_oci::RuntimeConfig,
        layer_size: Option<u64>,
        seccomp: Option<skiff_sandbox::seccomp::Policy>,
    ) -> Result<(Record, Spec)> {
        let root = &self.config.root;
        let facts = crate::wasm_images::image_facts(config);
        self.note_wasm_module(image_mount, config, false);
        let kind = match &req.sandbox {
            Some(name) => {
                let kind = self.kind(name)?;
                if !kind.can_run_when_named(&facts) {
                    return Err(EngineError::Invalid(format!(
                        "the {name} sandbox cannot run {} images ({}/{})",
                        req.image, facts.os, facts.architecture
                    )));
                }
                kind
            }
            None => self.kind_for(&facts)?,
        };
        let block_device = match kind.root() {
            RootKind::Directory => None,
            RootKind::BlockDevice => {
                if req.userns.is_some() || req.record_trace.is_some() {
                    return Err(EngineError::Invalid(format!(
                        "the {} sandbox takes neither --userns nor --record-trace: its guest reads the image as a block device",
                        kind.name()
                    )));
                }
                Some(self.ensure_block_device(image_mount, &req.image, req.platform.as_ref())?)
            }
        };
        let cdir = record::dir(root, id);
        let scratch = root_dir::prepare_run_dir(root)?.join(id);
        let dirs = OverlayDirs::new(&cdir, &scratch, layer_size);
        let cgroups_path = format!("/skiff/{id}");
        let spec = req.spec(
            config,
            &Placement {
                id,
                cgroups_path: &cgroups_path,
                rootfs: &dirs.merged,
                image_tree: image_mount,
                root,
                volumes_read_only_by_default: kind.volumes_read_only_by_default(),
            },
            seccomp,
        )?;
        let record = Record {
            id: id.to_string(),
            name,
            image: req.image.clone(),
            command: spec.args.clone(),
            created: record::now(),
            status: Status::Created,
            pid: None,
            pid_start: None,
            exit_code: None,
            oom_killed: false,
            finished: None,
            detached: req.detach,
            remove_on_exit: req.remove_on_exit,
            cgroups_path: spec.cgroups_path.clone(),
            stop_signal: parse_signal(&config.stop_signal).unwrap_or(libc::SIGTERM),
            private_network: req.network != skiff_sandbox::Network::Host,
            image_mount: image_mount.to_path_buf(),
            layer_size,
            log_max_file_bytes: req.log_max_file_bytes()?,
            keeps_log: true,
            sandbox: kind.name().to_string(),
            block_device: block_device.clone(),
        };
        record.save(root)?;
        tracing::debug!("record written");
        let result = (|| -> Result<Spec> {
            root_dir::make_private(&scratch).ctx(|| format!("creating {}", scratch.display()))?;
            let mut oci = spec.to_oci()?;
            // A kind with a block device makes its writable layer itself; a
            // kind that only reads the root (a module in the Wasm pool) is
            // given the image's tree as it is.
            if block_device.is_none() && kind.writes_its_root(&oci) {
                let owner = req.userns.map(|s| s.base);
                match crate::image_mounts::init_layer(image_mount, owner)? {
                    Some(init) => rootfs::mount_overlay(&[&init, image_mount], &dirs, owner)?,
                    None => rootfs::mount_overlay(&[image_mount], &dirs, owner)?,
                }
                tracing::debug!("overlay mounted");
            } else if block_device.is_none() {
                let root = oci_spec::runtime::RootBuilder::default()
                    .path(image_mount)
                    .readonly(true)
                    .build()
                    .map_err(|e| EngineError::Invalid(format!("the spec's root: {e}")))?;
                oci.set_root(Some(root));
            }
            let json = skiff_sandbox::spec::to_json(&oci)?;
            let path = cdir.join("config.json");
            std::fs::write(&path, json).ctx(|| format!("writing {}", path.display()))?;
            Ok(oci)
        })();
        match result {
            Ok(oci) => Ok((record, oci)),
            Err(e) => {
                let cleanup = self.cleanup(&record, true).err();
                Err(e.with_cleanup(cleanup))
            }
        }
    }

    /// Compiles the policy into the node's filter cache on a thread, while
    /// the image is mounted (a first start on a node compiles for ~30 ms).
    /// The container's start finds it there; an error here is reported
    /// there.
    fn precompile_seccomp(
        &self,
        policy: Option<skiff_sandbox::seccomp::Policy>,
    ) -> Option<std::thread::JoinHandle<()>> {
        let policy = policy?;
        let cache = root_dir::seccomp_cache(&self.config.root);
        Some(std::thread::spawn(move || {
            let _ = skiff_sandbox::seccomp_filter::CompiledFilter::cached(&policy, &cache);
        }))
    }

    /// After a `--record-trace` run: releases its private image mount, so
    /// the trace is complete.
    pub fn finish_trace(&self, created_trace_mount: Option<&std::path::Path>) {
        if let Some(t) = created_trace_mount {
            self.release_image_mount(t);
        }
    }
}
