//! What identifies one version of a file on disk, from its metadata alone.

use std::fs::Metadata;
use std::time::UNIX_EPOCH;

/// What identifies one version of a file on disk without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    len: u64,
    modified_nanos: u128,
    inode: u64,
}

impl Fingerprint {
    pub(crate) fn of(metadata: &Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        let modified_nanos = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Fingerprint {
            len: metadata.len(),
            modified_nanos,
            inode,
        }
    }

    /// A strong entity tag from metadata alone, for files that are streamed and never hashed
    /// (the same inputs nginx uses, plus the inode).
    pub(crate) fn etag(&self) -> String {
        format!(
            "\"{:x}-{:x}-{:x}\"",
            self.len, self.modified_nanos, self.inode
        )
    }
}
