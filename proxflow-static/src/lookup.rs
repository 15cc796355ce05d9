//! Where a request path leads in the folders: a file, a directory's index, a listing, a
//! redirect that adds the slash, or nothing; content-hashed names; the SPA fallback. Everything
//! here is blocking file-system work, run through [`blocking`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;

use crate::assets::{short_hash, split_hashed};
use crate::config::StaticConfig;
use crate::entry::{Entry, LoadOptions};

/// Where a request path leads on disk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Located {
    File(PathBuf),
    /// A directory without an index, to be listed.
    Directory(PathBuf),
    /// A directory named without its trailing slash.
    AddSlash,
    NotFound,
}

/// A file loaded for a request key, or found in the memory cache for it.
pub(crate) struct Hit {
    pub(crate) entry: Arc<Entry>,
    /// Set when the key is a content-hashed name of another file.
    pub(crate) hashed: Option<HashedName>,
}

/// A content-hashed name (`app.3f2a9c1e.js`) resolved to its file.
pub(crate) struct HashedName {
    /// The file's own key (`app.js`), under which it is cached.
    pub(crate) logical: String,
    /// The hash in the name is the file's current one.
    pub(crate) current: bool,
}

impl Hit {
    /// Whether the name carried the file's current hash (a versioned URL).
    pub(crate) fn names_current_hash(&self) -> bool {
        self.hashed.as_ref().is_some_and(|hashed| hashed.current)
    }

    /// Resolves `key` as a content-hashed name of `entry`'s file, when it has that shape.
    pub(crate) fn hashed(entry: Arc<Entry>, logical: String, hash: &str) -> Hit {
        let current = entry.hash.map(short_hash).as_deref() == Some(hash);
        Hit {
            entry,
            hashed: Some(HashedName { logical, current }),
        }
    }
}

/// The folders and the rules for finding a file in them.
pub(crate) struct Lookup {
    /// The folders, canonical where they exist, searched in order.
    roots: Vec<PathBuf>,
    index: String,
    listing: bool,
    follow_symlinks_outside: bool,
    /// Names that hold no file are tried as content-hashed names.
    content_hash: bool,
    load_options: LoadOptions,
    /// Revalidation also compares the bytes of files held in memory.
    revalidate_by_content: bool,
    spa: bool,
    spa_exclude: Vec<String>,
}

impl Lookup {
    pub(crate) fn new(config: &StaticConfig) -> Self {
        // Development reads compressible files into memory only to compress them.
        let compress_in_development = config.compress && config.compress_in_development;
        let roots = config
            .folders
            .iter()
            .map(|folder| {
                folder.canonicalize().unwrap_or_else(|error| {
                    tracing::warn!(folder = %folder.display(), %error, "static folder cannot be opened; its files answer 404");
                    folder.clone()
                })
            })
            .collect();
        Lookup {
            roots,
            index: config.index.clone(),
            listing: config.listing,
            follow_symlinks_outside: config.follow_symlinks_outside,
            content_hash: config.content_hash,
            load_options: LoadOptions {
                memory_limit: (config.is_prod || compress_in_development)
                    .then_some(config.cache_max_file_size),
                memory_only_if_compressible: !config.is_prod,
                precompressed: config.precompressed,
                compress: (config.is_prod || compress_in_development) && config.compress,
                hash_streamed: config.content_hash,
            },
            revalidate_by_content: config.revalidate_by_content,
            spa: config.spa,
            spa_exclude: config.spa_exclude.clone(),
        }
    }

    pub(crate) fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Finds and reads the file for `relative`; a content-hashed name that names no file is
    /// tried as its logical path. `now_ms` is when the file counts as checked. Blocking.
    pub(crate) fn load(
        &self,
        relative: &str,
        trailing_slash: bool,
        now_ms: u64,
    ) -> io::Result<Result<Hit, Located>> {
        let (file, hashed) = match self.locate(relative, trailing_slash)? {
            Located::File(file) => (file, None),
            Located::NotFound if self.content_hash => {
                let Some((logical, hash)) = split_hashed(relative) else {
                    return Ok(Err(Located::NotFound));
                };
                match self.locate(&logical, false)? {
                    Located::File(file) => (file, Some((logical, hash))),
                    other => return Ok(Err(other)),
                }
            }
            other => return Ok(Err(other)),
        };
        let root = if self.follow_symlinks_outside {
            None
        } else {
            match self.roots.iter().find(|root| file.starts_with(root)) {
                Some(root) => Some(root.as_path()),
                None => return Ok(Err(Located::NotFound)),
            }
        };
        let entry = match Entry::load_beneath(root, &file, self.load_options, now_ms) {
            Ok(entry) => Arc::new(entry),
            // Removed since it was found, or swapped for a link that leaves the folder.
            Err(error) if is_missing(&error) => return Ok(Err(Located::NotFound)),
            Err(error) => return Err(error),
        };
        Ok(Ok(match hashed {
            Some((logical, hash)) => Hit::hashed(entry, logical, hash),
            None => Hit {
                entry,
                hashed: None,
            },
        }))
    }

    /// Whether `relative` still leads to `entry`'s file, unchanged: a file added to an earlier
    /// folder, or an index added to a listed directory, takes over. Blocking.
    pub(crate) fn still_leads_to(
        &self,
        entry: &Entry,
        relative: &str,
        trailing_slash: bool,
    ) -> io::Result<bool> {
        let same_file = matches!(self.locate(relative, trailing_slash)?, Located::File(file) if file == entry.path);
        Ok(same_file && entry.unchanged_on_disk(self.revalidate_by_content)?)
    }

    /// Where `relative` leads in the folders, first folder first. Blocking.
    pub(crate) fn locate(&self, relative: &str, trailing_slash: bool) -> io::Result<Located> {
        for root in &self.roots {
            let candidate = root.join(relative);
            let metadata = match std::fs::metadata(&candidate) {
                Ok(metadata) => metadata,
                Err(error) if is_missing(&error) => continue,
                Err(error) => return Err(error),
            };
            if metadata.is_dir() {
                if !trailing_slash {
                    // A directory outside answers as a missing one: a redirect would show it.
                    if self.inside_root(root, &candidate) {
                        return Ok(Located::AddSlash);
                    }
                    continue;
                }
                let index = candidate.join(&self.index);
                if std::fs::metadata(&index).is_ok_and(|m| m.is_file())
                    && self.inside_root(root, &index)
                {
                    return Ok(Located::File(index));
                }
                if self.listing && self.inside_root(root, &candidate) {
                    return Ok(Located::Directory(candidate));
                }
            } else if metadata.is_file() && !trailing_slash && self.inside_root(root, &candidate) {
                return Ok(Located::File(candidate));
            }
        }
        Ok(Located::NotFound)
    }

    /// Refuses a path that a symlink takes outside its folder, unless that is allowed.
    fn inside_root(&self, root: &Path, path: &Path) -> bool {
        if self.follow_symlinks_outside {
            return true;
        }
        let inside = path.canonicalize().is_ok_and(|real| real.starts_with(root));
        if !inside {
            tracing::warn!(path = %path.display(), "refused a symlink that leaves the static folder");
        }
        inside
    }

    /// Whether a missing file at `full_path` (the path the client sent) gets the SPA's index:
    /// GET or HEAD of a path that looks like a client-side route, outside `spa_exclude`.
    pub(crate) fn spa_fallback(&self, get_or_head: bool, full_path: &str) -> bool {
        let excluded = self
            .spa_exclude
            .iter()
            .any(|prefix| under_prefix(full_path, prefix));
        self.spa && get_or_head && looks_like_route(full_path) && !excluded
    }
}

/// A route names no file: its last segment (a trailing slash aside) has no extension, so that
/// a missing asset (`/app.js`, `/small.txt/`) is a 404, and no segment starts with a dot, so
/// that `/.well-known/...` and other dot-directories never get the index.
fn looks_like_route(full_path: &str) -> bool {
    let mut segments = full_path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy());
    let mut last_has_dot = false;
    let dot_segment = segments.any(|segment| {
        last_has_dot = segment.contains('.');
        segment.starts_with('.')
    });
    !dot_segment && !last_has_dot
}

fn under_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Errors that mean "no such file" for the client: missing, a path below a file
/// (`file.txt/x`), a name too long for the file system, a symlink loop.
fn is_missing(error: &io::Error) -> bool {
    /// ELOOP has no stable `ErrorKind` yet.
    #[cfg(target_os = "linux")]
    const SYMLINK_LOOP: Option<i32> = Some(40);
    #[cfg(target_os = "macos")]
    const SYMLINK_LOOP: Option<i32> = Some(62);
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    const SYMLINK_LOOP: Option<i32> = None;
    let missing = matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename
    );
    if !missing && SYMLINK_LOOP.is_some() && error.raw_os_error() == SYMLINK_LOOP {
        tracing::warn!(%error, "symlink loop in the static folder");
        return true;
    }
    missing
}

/// Runs file-system work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(dir: &Path, change: impl FnOnce(&mut StaticConfig)) -> Lookup {
        let mut config = StaticConfig {
            folders: vec![dir.into()],
            ..StaticConfig::default()
        };
        change(&mut config);
        Lookup::new(&config)
    }

    #[test]
    fn paths_lead_to_files_indexes_listings_and_redirects() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("docs/index.html"), "docs").unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        let plain = lookup(&root, |_| {});
        assert_eq!(
            plain.locate("a.txt", false).unwrap(),
            Located::File(root.join("a.txt"))
        );
        assert_eq!(plain.locate("a.txt", true).unwrap(), Located::NotFound);
        assert_eq!(plain.locate("docs", false).unwrap(), Located::AddSlash);
        assert_eq!(
            plain.locate("docs", true).unwrap(),
            Located::File(root.join("docs/index.html"))
        );
        assert_eq!(plain.locate("empty", true).unwrap(), Located::NotFound);
        assert_eq!(plain.locate("a.txt/x", false).unwrap(), Located::NotFound);
        let listing = lookup(&root, |c| c.listing = true);
        assert_eq!(
            listing.locate("empty", true).unwrap(),
            Located::Directory(root.join("empty"))
        );
    }

    #[test]
    fn the_spa_fallback_spares_files_and_excluded_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let spa = lookup(dir.path(), |c| c.spa = true);
        assert!(spa.spa_fallback(true, "/static/settings/profile"));
        assert!(!spa.spa_fallback(false, "/static/settings/profile"));
        assert!(!spa.spa_fallback(true, "/static/app.js"));
        assert!(!spa.spa_fallback(true, "/api/users"));
        assert!(spa.spa_fallback(true, "/apiary"));
        assert!(spa.spa_fallback(true, "/deep/route/"));
        assert!(!spa.spa_fallback(true, "/small.txt/"));
        assert!(!spa.spa_fallback(true, "/static/app%2Ejs"));
        assert!(!spa.spa_fallback(true, "/.well-known/acme-challenge/token"));
        assert!(!spa.spa_fallback(true, "/a/.git/config"));
        assert!(!lookup(dir.path(), |_| {}).spa_fallback(true, "/static/settings"));
    }
}
