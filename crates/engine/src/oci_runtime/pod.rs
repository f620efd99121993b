//! Where a CRI pod's containers meet, for a sandbox kind that holds a
//! whole pod (the VM): the pod's sandbox (pause) container's state
//! directory holds `pod/`, which its sandbox may share whole, and each
//! app container of the pod gets `pod/ID` in it. The CRI's annotations
//! say which container is which.

use std::path::PathBuf;

use oci_spec::runtime::Spec;
use skiff_sandbox::PodRole;

use super::{check_id, OciRuntime};
use crate::error::{EngineError, Result};

/// The CRI's annotation: `sandbox` for a pod's pause container,
/// `container` for the others.
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The CRI's annotation naming a container's pod (its sandbox container).
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// A container's place in its pod, as paths in the runtime's root.
pub(super) struct PodPlace {
    /// The sandbox container's state directory.
    sandbox: PathBuf,
    /// Its share: `sandbox/pod`.
    share: PathBuf,
    member: bool,
    /// The container's ID.
    name: String,
}

impl PodPlace {
    /// Makes a pod sandbox's share, root's alone as its state directory
    /// is; a member finds its sandbox's.
    pub(super) fn make_share(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        if self.member {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.share)
            .map_err(|e| EngineError::io(format!("creating {}", self.share.display()), e))
    }

    pub(super) fn role(&self) -> PodRole<'_> {
        if self.member {
            PodRole::Member {
                sandbox: &self.sandbox,
                share: &self.share,
                name: &self.name,
            }
        } else {
            PodRole::Sandbox { share: &self.share }
        }
    }
}

impl OciRuntime {
    /// Container `id`'s place in a pod, if its spec puts it in one.
    pub(super) fn pod_place(&self, id: &str, spec: &Spec) -> Result<Option<PodPlace>> {
        let annotations = spec.annotations().as_ref();
        let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let (sandbox_id, member) = match get(CRI_CONTAINER_TYPE) {
            Some("sandbox") => (id, false),
            Some("container") => {
                let sandbox = get(CRI_SANDBOX_ID).ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "container {id} is a pod's container without the {CRI_SANDBOX_ID} annotation"
                    ))
                })?;
                check_id(sandbox)?;
                (sandbox, true)
            }
            _ => return Ok(None),
        };
        let sandbox = self.dir(sandbox_id);
        Ok(Some(PodPlace {
            share: sandbox.join("pod"),
            sandbox,
            member,
            name: id.to_string(),
        }))
    }

    /// Removes what a pod's app container left in its pod's share (its
    /// binds), if its supervisor could not.
    pub(super) fn remove_pod_leftovers(&self, id: &str, spec: &Spec) {
        if let Ok(Some(place)) = self.pod_place(id, spec) {
            if place.member {
                let _ = skiff_sandbox::rootfs::remove_dir_detaching_mounts(&place.share.join(id));
            }
        }
    }
}
