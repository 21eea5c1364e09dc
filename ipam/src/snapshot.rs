//! What all snapshots share: the format version and its check.
//!
//! Every snapshot is a plain serde struct whose JSON field names are
//! camelCase and stable; values are listed (sorted) rather than stored as
//! raw bitmap words so a human can read and repair a persisted snapshot.
//! New optional fields may be added within a version; anything that changes
//! the meaning of existing fields bumps [`SNAPSHOT_VERSION`].

use crate::error::IpamError;

/// The snapshot format version this crate writes and accepts.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Rejects snapshots of any other version.
pub(crate) fn check_version(found: u32) -> Result<(), IpamError> {
    if found == SNAPSHOT_VERSION {
        Ok(())
    } else {
        Err(IpamError::UnsupportedSnapshotVersion {
            found,
            supported: SNAPSHOT_VERSION,
        })
    }
}

/// Compares a snapshot's range with the allocator's, both displayed.
pub(crate) fn check_range<T: PartialEq + std::fmt::Display>(
    expected: &T,
    found: &T,
) -> Result<(), IpamError> {
    if expected == found {
        Ok(())
    } else {
        Err(IpamError::SnapshotRangeMismatch {
            expected: expected.to_string(),
            found: found.to_string(),
        })
    }
}
