//! `features`: what this runtime supports, as the runtime spec's
//! `features.json` says it (features-linux.md), read by callers that
//! adapt to the runtime (containerd 2, Podman 5).

use serde_json::{json, Value};

/// The features document.
pub fn features() -> Value {
    let caps: Vec<String> = skiff_sandbox::capabilities::all_names()
        .into_iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": skiff_sandbox::hooks::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "ro", "rw", "nosuid", "nodev", "noexec", "relatime", "strictatime", "noatime",
            "nodiratime", "sync", "bind", "rbind", "private", "rprivate", "slave", "rslave",
            "shared", "rshared"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false}
        },
        "annotations": {
            "org.skiff.runtime": "skiff-oci"
        }
    })
}
