//! Exit codes. Documented in the README; scripts rely on them.

/// The command did what was asked.
pub const OK: i32 = 0;
/// The command failed: bad input, network, disk, or an error the message names.
pub const FAILURE: i32 = 1;
/// The command line was wrong (clap prints usage).
pub const USAGE: i32 = 2;
/// Verification failed: a chunk, blob or the metadata does not match its digest.
pub const VERIFY_FAILED: i32 = 3;

/// Picks the exit code for an error.
pub fn for_error(e: &anyhow::Error) -> i32 {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<skiff_store::StoreError>() {
            if matches!(
                s,
                skiff_store::StoreError::ChunkCorrupt { .. }
                    | skiff_store::StoreError::RootDigestMismatch { .. }
            ) {
                return VERIFY_FAILED;
            }
        }
        if let Some(skiff_oci::OciError::DigestMismatch { .. }) =
            cause.downcast_ref::<skiff_oci::OciError>()
        {
            return VERIFY_FAILED;
        }
    }
    FAILURE
}
