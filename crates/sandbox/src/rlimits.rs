//! Resource limits (`process.rlimits`): the defaults every container gets,
//! whatever the shell that started skiff had, and `--ulimit` overrides.
//!
//! The defaults are the kernel's own for a freshly booted system's first
//! process, except `NOFILE`, which is 1024:524288 as systemd and Docker 25+
//! give their services: a soft limit that `select(2)` users survive, a hard
//! one that servers can raise to. A hard limit above skiff's own cannot be
//! set without `CAP_SYS_RESOURCE`; without it, skiff's own hard limit is
//! used instead (`RLIM_INFINITY` shows as `unlimited`).

use crate::SandboxError;

const INFINITY: u64 = libc::RLIM_INFINITY;

/// `(OCI name, resource, soft, hard)`. `None` for NPROC and SIGPENDING:
/// the kernel sizes those from memory; skiff gives no cap of its own (the
/// pids cgroup limit bounds processes) and takes skiff's hard limit.
const DEFAULTS: &[(&str, libc::__rlimit_resource_t, Option<u64>, Option<u64>)] = &[
    (
        "RLIMIT_CPU",
        libc::RLIMIT_CPU,
        Some(INFINITY),
        Some(INFINITY),
    ),
    (
        "RLIMIT_FSIZE",
        libc::RLIMIT_FSIZE,
        Some(INFINITY),
        Some(INFINITY),
    ),
    (
        "RLIMIT_DATA",
        libc::RLIMIT_DATA,
        Some(INFINITY),
        Some(INFINITY),
    ),
    (
        "RLIMIT_STACK",
        libc::RLIMIT_STACK,
        Some(8 << 20),
        Some(INFINITY),
    ),
    ("RLIMIT_CORE", libc::RLIMIT_CORE, Some(0), Some(INFINITY)),
    (
        "RLIMIT_RSS",
        libc::RLIMIT_RSS,
        Some(INFINITY),
        Some(INFINITY),
    ),
    ("RLIMIT_NPROC", libc::RLIMIT_NPROC, None, None),
    (
        "RLIMIT_NOFILE",
        libc::RLIMIT_NOFILE,
        Some(1024),
        Some(524_288),
    ),
    (
        "RLIMIT_MEMLOCK",
        libc::RLIMIT_MEMLOCK,
        Some(8 << 20),
        Some(8 << 20),
    ),
    ("RLIMIT_AS", libc::RLIMIT_AS, Some(INFINITY), Some(INFINITY)),
    (
        "RLIMIT_LOCKS",
        libc::RLIMIT_LOCKS,
        Some(INFINITY),
        Some(INFINITY),
    ),
    ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING, None, None),
    (
        "RLIMIT_MSGQUEUE",
        libc::RLIMIT_MSGQUEUE,
        Some(819_200),
        Some(819_200),
    ),
    ("RLIMIT_NICE", libc::RLIMIT_NICE, Some(0), Some(0)),
    ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO, Some(0), Some(0)),
    (
        "RLIMIT_RTTIME",
        libc::RLIMIT_RTTIME,
        Some(INFINITY),
        Some(INFINITY),
    ),
];

/// One limit, as `process.rlimits` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The OCI name, e.g. `RLIMIT_NOFILE`.
    pub name: &'static str,
    pub soft: u64,
    pub hard: u64,
}

/// The kernel's number for an OCI rlimit name.
pub(crate) fn resource_number(name: &str) -> Option<libc::__rlimit_resource_t> {
    DEFAULTS.iter().find(|d| d.0 == name).map(|d| d.1)
}

/// The OCI name of a resource number.
pub(crate) fn resource_name(resource: libc::__rlimit_resource_t) -> &'static str {
    DEFAULTS
        .iter()
        .find(|d| d.1 == resource)
        .map_or("an rlimit", |d| d.0)
}

/// `--ulimit NAME=SOFT[:HARD]`, Docker's syntax (`nofile=1024:2048`); a
/// value may be `unlimited` or `-1`.
pub fn parse_ulimit(spec: &str) -> Result<Limit, SandboxError> {
    let bad = |why: &str| {
        SandboxError::Invalid(format!(
            "--ulimit {spec:?}: {why}; the form is NAME=SOFT[:HARD], e.g. --ulimit nofile=4096:8192"
        ))
    };
    let (name, values) = spec.split_once('=').ok_or_else(|| bad("no '='"))?;
    let oci = format!("RLIMIT_{}", name.trim().to_ascii_uppercase());
    let Some(entry) = DEFAULTS.iter().find(|d| d.0 == oci) else {
        let known: Vec<String> = DEFAULTS
            .iter()
            .map(|d| d.0.trim_start_matches("RLIMIT_").to_ascii_lowercase())
            .collect();
        return Err(bad(&format!("unknown limit (known: {})", known.join(", "))));
    };
    let value = |v: &str| -> Result<u64, SandboxError> {
        match v.trim() {
            "unlimited" | "-1" => Ok(INFINITY),
            n => n
                .parse::<u64>()
                .map_err(|_| bad(&format!("{n:?} is not a number"))),
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (value(s)?, value(h)?),
        None => {
            let v = value(values)?;
            (v, v)
        }
    };
    if soft > hard {
        return Err(bad("the soft limit is above the hard limit"));
    }
    Ok(Limit {
        name: entry.0,
        soft,
        hard,
    })
}

/// Every limit a container gets: the defaults, then `overrides`. A hard
/// limit (given or default) above skiff's own is lowered to it when skiff
/// lacks `CAP_SYS_RESOURCE`, and the soft limit with it; an override that
/// asks for more than that is an error.
pub fn container_limits(overrides: &[Limit]) -> Result<Vec<Limit>, SandboxError> {
    let can_raise = crate::capabilities::has_effective_capability("SYS_RESOURCE");
    let mut out = Vec::with_capacity(DEFAULTS.len());
    for &(name, resource, soft, hard) in DEFAULTS {
        let own = own_limit(resource);
        let ceiling = if can_raise { INFINITY } else { own.1 };
        let given = overrides.iter().rev().find(|o| o.name == name);
        let limit = match given {
            Some(o) => {
                if o.hard > ceiling {
                    return Err(SandboxError::Invalid(format!(
                        "--ulimit {}: the hard limit {} is above skiff's own ({}), which only CAP_SYS_RESOURCE may raise; give at most {}",
                        name.trim_start_matches("RLIMIT_").to_ascii_lowercase(),
                        show(o.hard),
                        show(own.1),
                        show(own.1)
                    )));
                }
                o.clone()
            }
            None => {
                let hard = hard.unwrap_or(ceiling).min(ceiling);
                let soft = soft.unwrap_or(hard).min(hard);
                Limit { name, soft, hard }
            }
        };
        out.push(limit);
    }
    Ok(out)
}

fn show(v: u64) -> String {
    if v == INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// This process's (soft, hard) limit.
fn own_limit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct, alive here.
    if unsafe { libc::getrlimit(resource, &mut r) } < 0 {
        return (INFINITY, INFINITY);
    }
    (r.rlim_cur, r.rlim_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_parse_as_docker_writes_them() {
        let l = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((l.name, l.soft, l.hard), ("RLIMIT_NOFILE", 1024, 2048));
        let l = parse_ulimit("CORE=unlimited").unwrap();
        assert_eq!((l.soft, l.hard), (INFINITY, INFINITY));
        assert_eq!(parse_ulimit("nproc=-1:-1").unwrap().hard, INFINITY);
        for bad in ["nofile", "nofile=2048:1024", "nofile=x", "bogus=1"] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_do_not_follow_the_caller() {
        let limits = container_limits(&[]).unwrap();
        assert_eq!(limits.len(), DEFAULTS.len());
        let nofile = limits.iter().find(|l| l.name == "RLIMIT_NOFILE").unwrap();
        assert_eq!(nofile.soft, 1024.min(nofile.hard));
        assert!(nofile.hard <= 524_288);
        let memlock = limits.iter().find(|l| l.name == "RLIMIT_MEMLOCK").unwrap();
        assert!(memlock.soft <= 8 << 20);
        let over = container_limits(&[parse_ulimit("nofile=100:200").unwrap()]).unwrap();
        let nofile = over.iter().find(|l| l.name == "RLIMIT_NOFILE").unwrap();
        assert_eq!((nofile.soft, nofile.hard), (100, 200));
    }
}
