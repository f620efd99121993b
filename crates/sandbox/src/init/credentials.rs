//! Who the command runs as and under what limits: resource limits, the
//! capability sets and user, seccomp.

use super::plan::{Plan, Rlimit};
use super::sys::{check, fail, Step};

pub(crate) fn set_rlimits(limits: &[Rlimit]) -> Step {
    for r in limits {
        let limit = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        check(
            // SAFETY: setrlimit reads the struct, alive here.
            unsafe { libc::setrlimit(r.resource, &limit) },
            format!(
                "setting {} to {}:{}",
                crate::rlimits::resource_name(r.resource),
                r.soft,
                r.hard
            ),
        )?;
    }
    Ok(())
}

pub(crate) fn load_seccomp(plan: &Plan) -> Step {
    match &plan.seccomp {
        Some(filter) => filter
            .load()
            .map_err(|e| fail(format!("loading the seccomp filter: {e}"))),
        None => Ok(()),
    }
}

/// Drops to the spec's user with its capabilities, as runc orders it: the
/// bounding set first, then IDs with capabilities kept, then the sets.
pub(crate) fn switch_user(plan: &Plan) -> Step {
    let caps = plan.caps;
    for cap in 0..=plan.last_cap.min(63) {
        if caps.bounding & (1u64 << cap) == 0 {
            check(
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) },
                format!("dropping capability {cap} from the bounding set"),
            )?;
        }
    }
    // SAFETY: prctl and set*id calls with plain integers and a slice that
    // outlives the call; single-threaded, so glibc's set*id broadcast is moot.
    unsafe {
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
            "keeping capabilities across the user switch",
        )?;
        check(
            libc::setgroups(plan.additional_gids.len(), plan.additional_gids.as_ptr()),
            "setting supplementary groups",
        )?;
        check(
            libc::setresgid(plan.gid, plan.gid, plan.gid),
            format!("switching to group {}", plan.gid),
        )?;
        check(
            libc::setresuid(plan.uid, plan.uid, plan.uid),
            format!("switching to user {}", plan.uid),
        )?;
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0),
            "clearing keep-capabilities",
        )?;
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let half = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
    let data: [Data; 2] = [false, true].map(|hi| Data {
        effective: half(caps.effective, hi),
        permitted: half(caps.permitted, hi),
        inheritable: half(caps.inheritable, hi),
    });
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    check(
        // SAFETY: capset reads the header and two data words, all alive here.
        unsafe {
            libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) as libc::c_int
        },
        "setting capabilities",
    )?;
    // SAFETY: prctl with integer arguments.
    unsafe {
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
            "clearing ambient capabilities",
        )?;
        // The kernel raises an ambient capability only if it is permitted
        // and inheritable; runc skips the others (its `runc spec` lists
        // ambient capabilities with no inheritable set), and so does this.
        let raisable = caps.ambient & caps.permitted & caps.inheritable;
        for cap in 0..=plan.last_cap.min(63) {
            if raisable & (1u64 << cap) != 0 {
                check(
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        cap as libc::c_ulong,
                        0,
                        0,
                    ),
                    format!("raising ambient capability {cap}"),
                )?;
            }
        }
    }
    Ok(())
}
