//! Opening a file so that it is the file inside its folder, even when a symlink in the folder is
//! swapped between the check of the path and the open: the kernel resolves the path beneath the
//! folder (`openat2` with `RESOLVE_BENEATH`), or the opened descriptor itself is compared with
//! what the path resolves to afterwards.

use std::fs::File;
use std::io;
use std::path::Path;

/// Opens `path` for reading; with a `root`, only if it resolves to a file beneath it. A path
/// that leaves the root answers `NotFound`, as a missing file does. Blocking.
pub(crate) fn open(root: Option<&Path>, path: &Path) -> io::Result<File> {
    let Some(root) = root else {
        return open_by_name(path);
    };
    let Ok(relative) = path.strip_prefix(root) else {
        return Err(refused(path));
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    match open_beneath(root, relative) {
        Ok(file) => return Ok(file),
        // Without openat2 (before Linux 5.6, or filtered by a sandbox), or when the path goes
        // through an absolute symlink (which RESOLVE_BENEATH refuses even when it stays
        // inside), or when a concurrent rename made the kernel give up: check the descriptor.
        Err(error)
            if [
                rustix::io::Errno::NOSYS,
                rustix::io::Errno::XDEV,
                rustix::io::Errno::AGAIN,
            ]
            .contains(&error) => {}
        Err(error) => return Err(error.into()),
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = relative;
    open_verified(root, path)
}

/// One `openat2` of `relative` beneath a descriptor of `root`: the kernel refuses `..`, absolute
/// paths and symlinks that would leave it, whatever they point to at that instant.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn open_beneath(root: &Path, relative: &Path) -> rustix::io::Result<File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = rustix::fs::openat2(
        &dir,
        relative,
        // Not blocking on a FIFO put in place of the file.
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::BENEATH,
    )?;
    Ok(File::from(file))
}

/// Opens `path` by name, then checks that the descriptor is the file the path resolves to now,
/// canonically, inside `root`: a swapped link gives either a path outside or another file.
fn open_verified(root: &Path, path: &Path) -> io::Result<File> {
    let file = open_by_name(path)?;
    let opened = file.metadata()?;
    let real = path.canonicalize()?;
    if !real.starts_with(root) || !same_file(&opened, &std::fs::metadata(&real)?) {
        return Err(refused(path));
    }
    Ok(file)
}

/// Opens `path` for reading without blocking on a FIFO put in place of the file.
fn open_by_name(path: &Path) -> io::Result<File> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let nonblocking = rustix::fs::OFlags::NONBLOCK.bits() as i32;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nonblocking)
            .open(path)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        if !std::fs::metadata(path)?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a regular file", path.display()),
            ));
        }
        File::open(path)
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

fn refused(path: &Path) -> io::Error {
    tracing::warn!(path = %path.display(), "refused a file that leaves the static folder");
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} leaves the static folder", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read(file: io::Result<File>) -> io::Result<String> {
        let mut text = String::new();
        file?.read_to_string(&mut text)?;
        Ok(text)
    }

    #[cfg(unix)]
    #[test]
    fn files_open_only_beneath_their_root() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(base.join("secret.txt"), "secret").unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        symlink(base.join("secret.txt"), root.join("out.txt")).unwrap();
        symlink("../secret.txt", root.join("relative-out.txt")).unwrap();
        symlink(root.join("a.txt"), root.join("absolute-in.txt")).unwrap();
        symlink("a.txt", root.join("relative-in.txt")).unwrap();
        let beneath = |name: &str| read(open(Some(&root), &root.join(name)));
        assert_eq!(beneath("a.txt").unwrap(), "a");
        assert_eq!(beneath("relative-in.txt").unwrap(), "a");
        assert_eq!(
            beneath("absolute-in.txt").unwrap(),
            "a",
            "checked by descriptor"
        );
        for outside in ["out.txt", "relative-out.txt", "../secret.txt"] {
            let error = beneath(outside).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::NotFound, "{outside}: {error}");
        }
        assert_eq!(read(open(None, &root.join("out.txt"))).unwrap(), "secret");
        assert_eq!(
            read(open_verified(&root, &root.join("relative-out.txt")))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            read(open_verified(&root, &root.join("relative-in.txt"))).unwrap(),
            "a"
        );
    }

    /// A FIFO put in place of a file (or of a precompressed sibling) does not hang the open.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_opens_without_blocking() {
        use rustix::fs::{FileType, Mode, CWD};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let fifo = root.join("pipe.txt");
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
        for root in [Some(root.as_path()), None] {
            let file = open(root, &fifo).unwrap();
            assert!(!file.metadata().unwrap().is_file());
        }
        assert!(open_verified(&root, &fifo).is_ok());
    }

    /// This kernel has openat2, so the tests exercise the kernel's confinement, not only the
    /// fallback.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_refuses_to_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        match open_beneath(&root, Path::new("a.txt")) {
            Err(rustix::io::Errno::NOSYS) => eprintln!("openat2 unavailable: fallback only"),
            other => {
                assert!(other.is_ok());
                assert_eq!(
                    open_beneath(&root, Path::new("../root/a.txt")).unwrap_err(),
                    rustix::io::Errno::XDEV
                );
            }
        }
    }
}
