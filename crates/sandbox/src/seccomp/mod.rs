//! Seccomp policies for containers: a built-in default that matches Docker's
//! default profile in effect, and a loader for `--security-opt seccomp=FILE`
//! that reads either the OCI `linux.seccomp` object or Docker's profile format.
//!
//! Everything here produces an [`oci_spec::runtime::LinuxSeccomp`], written
//! into the container's `config.json`; [`crate::seccomp_filter`] compiles it.

use std::path::PathBuf;

use oci_spec::runtime::LinuxSeccomp;
use thiserror::Error;

/// A seccomp policy: the spec's `linux.seccomp`.
pub type Policy = LinuxSeccomp;

/// Errors from reading a seccomp profile. Each names the file, the field at
/// fault and how to fix it.
#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("{}: cannot read seccomp profile: {source}; check the path given to --security-opt seccomp=", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: seccomp profile is larger than {limit} bytes; a profile is a JSON file of a few tens of KiB", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: seccomp profile is not valid JSON: {source}; a profile is a JSON object such as {{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [...]}}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {field} {problem}; {hint}", path.display())]
    Invalid {
        path: PathBuf,
        /// Where in the document, e.g. `syscalls[3].action`.
        field: String,
        problem: String,
        hint: String,
    },
}

mod default;
mod host;
mod profile;
mod tables;
#[cfg(test)]
mod tests;

pub use default::default_profile;
pub use profile::load_profile;
