//! Exit codes. Documented in the README; scripts rely on them.

/// The command did what was asked.
pub const OK: i32 = 0;
/// The command failed: bad input, network, disk, or an error the message names.
pub const FAILURE: i32 = 1;
/// The command line was wrong (clap prints usage).
pub const USAGE: i32 = 2;
/// `skiff run`'s own usage error (Docker's 125; the container's code is
/// passed through otherwise).
pub const RUN_USAGE: i32 = 125;
/// Verification failed: a chunk, blob or the metadata does not match its digest.
pub const VERIFY_FAILED: i32 = 3;

/// Picks the exit code for an error.
pub fn for_error(e: &anyhow::Error) -> i32 {
    let verification = e.chain().any(|cause| {
        if let Some(x) = cause.downcast_ref::<skiff_store::StoreError>() {
            return x.is_verification_failure();
        }
        if let Some(x) = cause.downcast_ref::<skiff_oci::OciError>() {
            return x.is_verification_failure();
        }
        if let Some(x) = cause.downcast_ref::<skiff_builder::BuildError>() {
            return x.is_verification_failure();
        }
        if let Some(x) = cause.downcast_ref::<skiff_engine::EngineError>() {
            return x.is_verification_failure();
        }
        if let Some(x) = cause.downcast_ref::<skiff_fs::UnpackError>() {
            return x.is_verification_failure();
        }
        if let Some(x) = cause.downcast_ref::<std::io::Error>() {
            return skiff_oci::error::io_is_verification_failure(x);
        }
        false
    });
    if verification {
        VERIFY_FAILED
    } else {
        FAILURE
    }
}

/// Renders an error and its causes on one line, skipping a cause whose text
/// the message already contains (error types here embed their sources).
pub fn render(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if msg.contains(&s) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s);
    }
    msg
}

pub use skiff_engine::console::say;
