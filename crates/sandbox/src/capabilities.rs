//! Capabilities as Docker names and combines them: the default set,
//! `--cap-add`/`--cap-drop` (with `ALL`), and what this process itself
//! holds (a capability outside its bounding set cannot be given on).

use std::collections::BTreeSet;
use std::str::FromStr;

use oci_spec::runtime::Capability;

use crate::SandboxError;

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux 6.x defines, in kernel bit order, for
/// `--cap-add ALL`.
const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Every capability name (without `CAP_`), in kernel bit order.
pub fn all_names() -> Vec<&'static str> {
    ALL_CAPABILITIES.to_vec()
}

/// The kernel's number for a capability name (without `CAP_`).
pub(crate) fn capability_number(name: &str) -> Option<u32> {
    ALL_CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .map(|n| n as u32)
}

/// A capability set as a bit mask: bit N is capability N.
pub fn mask(set: &Option<oci_spec::runtime::Capabilities>) -> u64 {
    set.iter()
        .flatten()
        .filter_map(|c| {
            let name = serde_json::to_value(c).ok()?;
            let name = name.as_str()?.strip_prefix("CAP_")?.to_string();
            capability_number(&name)
        })
        .fold(0, |m, bit| m | (1u64 << bit))
}

/// Parses capability names as Docker accepts them: any case, with or
/// without `CAP_`, or `ALL`.
pub fn parse_capabilities(names: &[String]) -> Result<BTreeSet<String>, SandboxError> {
    let mut out = BTreeSet::new();
    for n in names {
        let upper = n.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if bare == "ALL" {
            // All that this process can grant: a capability outside its own
            // bounding set cannot be given to a child.
            let bounding = bounding_set();
            out.extend(
                ALL_CAPABILITIES
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
                    .map(|(_, s)| s.to_string()),
            );
        } else if Capability::from_str(bare).is_ok() {
            out.insert(bare.to_string());
        } else {
            return Err(SandboxError::Invalid(format!(
                "{n:?} is not a Linux capability; use a name such as NET_ADMIN or SYS_PTRACE (see capabilities(7))"
            )));
        }
    }
    Ok(out)
}

/// This process's capability bounding set (all bits if unreadable).
fn bounding_set() -> u64 {
    capability_set("CapBnd:").unwrap_or(u64::MAX)
}

/// A capability set of this process from /proc/self/status.
fn capability_set(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
}

/// Whether this process holds `name` (without `CAP_`) in its effective set.
pub fn has_effective_capability(name: &str) -> bool {
    match (capability_number(name), capability_set("CapEff:")) {
        (Some(bit), Some(set)) => set & (1u64 << bit) != 0,
        _ => false,
    }
}

/// Docker's rule: start from the defaults, add, then drop (`ALL` in drop
/// empties the set first, so `--cap-drop ALL --cap-add X` keeps X).
pub fn effective_capabilities(
    add: &[String],
    drop: &[String],
) -> Result<BTreeSet<String>, SandboxError> {
    let add = parse_capabilities(add)?;
    let drop_all = drop.iter().any(|d| d.eq_ignore_ascii_case("ALL"));
    let drop = parse_capabilities(drop)?;
    let mut caps: BTreeSet<String> = if drop_all {
        BTreeSet::new()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    };
    if drop_all {
        caps.extend(add);
    } else {
        caps.extend(add);
        caps.retain(|c| !drop.contains(c));
    }
    let bounding = bounding_set();
    for c in &caps {
        let bit = ALL_CAPABILITIES.iter().position(|a| a == c);
        if bit.is_some_and(|b| bounding & (1u64 << b) == 0) {
            return Err(SandboxError::Invalid(format!(
                "CAP_{c} is not in skiff's own capability bounding set, so no container can have it; drop it with --cap-drop {c}"
            )));
        }
    }
    Ok(caps)
}

/// The capabilities as oci-spec values.
pub fn to_oci_capabilities(caps: &BTreeSet<String>) -> Vec<Capability> {
    caps.iter()
        .filter_map(|c| Capability::from_str(c).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(add: &[&str], drop: &[&str]) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        effective_capabilities(&s(add), &s(drop))
            .unwrap()
            .into_iter()
            .collect()
    }

    #[test]
    fn capabilities_follow_dockers_rules() {
        assert_eq!(caps(&[], &[]).len(), DEFAULT_CAPABILITIES.len());
        let c = caps(&["cap_net_admin"], &["MKNOD"]);
        assert!(c.contains(&"NET_ADMIN".to_string()));
        assert!(!c.contains(&"MKNOD".to_string()));
        assert_eq!(caps(&["KILL"], &["ALL"]), ["KILL"]);
        assert!(effective_capabilities(&["NOT_A_CAP".into()], &[]).is_err());
    }
}
