//! The one write-temp-then-rename of every Ratchet process, for a file another process may read:
//! a reader sees the old content or the new, never a mix; a crash leaves at most a dot-file
//! temporary beside it (every scan skips dot files).
//!
//! [`write_atomic`] is the common case; [`Atomic`] sets the file's mode at creation (a secret
//! is never readable by others, not even for a moment), asks for the data on disk before the
//! rename, or creates only the file's own directory; [`Atomic::prepare`] writes the temporary
//! now and renames it later ([`Pending::commit`]), for a file that must appear only once
//! something else exists.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other writer (process or thread) will pick: pid, nanoseconds, a counter.
pub fn unique_suffix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}.{}.{}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Replace `path` with `bytes` (its missing directories created): written to a temporary file
/// beside it, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    Atomic::new(path).write(bytes)
}

/// How to replace one file; [`Atomic::write`] or [`Atomic::prepare`] does it.
#[derive(Debug, Clone)]
pub struct Atomic<'a> {
    path: &'a Path,
    mode: u32,
    sync: bool,
    all_dirs: bool,
}

impl<'a> Atomic<'a> {
    /// Mode 0666 less the umask, no sync, every missing directory created.
    pub fn new(path: &'a Path) -> Self {
        Self { path, mode: 0o666, sync: false, all_dirs: true }
    }

    /// The permission bits the file is created with (less the umask).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The data reaches the disk before the rename (`fsync`).
    pub fn sync(mut self) -> Self {
        self.sync = true;
        self
    }

    /// Create the file's own directory when it is missing, but nothing above it: a write into
    /// a tree someone removed fails rather than making the tree again.
    pub fn own_dir_only(mut self) -> Self {
        self.all_dirs = false;
        self
    }

    /// Writes and renames into place.
    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.prepare(bytes)?.commit()
    }

    /// Writes the temporary file only; [`Pending::commit`] renames it into place.
    pub fn prepare(&self, bytes: &[u8]) -> std::io::Result<Pending> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let pending = Pending { tmp: dir.join(format!(".{name}.{}.tmp", unique_suffix())), path: self.path.into() };
        let open = || OpenOptions::new().write(true).create_new(true).mode(self.mode).open(&pending.tmp);
        let mut f = match open() {
            Err(e) if e.kind() == ErrorKind::NotFound && (self.all_dirs || dir.parent().is_some_and(Path::is_dir)) => {
                std::fs::create_dir_all(dir)?;
                open()?
            }
            other => other?,
        };
        f.write_all(bytes)?;
        if self.sync {
            f.sync_all()?;
        }
        Ok(pending)
    }
}

/// A temporary file written beside its destination and not yet renamed over it; dropped
/// without [`Pending::commit`], it is removed.
#[derive(Debug)]
pub struct Pending {
    tmp: PathBuf,
    path: PathBuf,
}

impl Pending {
    /// Renames the temporary over the destination.
    pub fn commit(self) -> std::io::Result<()> {
        std::fs::rename(&self.tmp, &self.path)
        // On success the drop's removal finds nothing; on failure it removes the temporary.
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut n: Vec<_> = std::fs::read_dir(dir).expect("list").flatten().map(|e| e.file_name()).collect();
        n.sort();
        n
    }

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let path = tmp.path().join("sub").join("f.json");
        write_atomic(&path, b"first, longer").expect("write");
        write_atomic(&path, b"second").expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        assert_eq!(names(path.parent().expect("dir")), ["f.json"], "no temporary left");
    }

    #[test]
    fn a_mode_is_set_at_creation() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let path = tmp.path().join("token");
        let pending = Atomic::new(&path).mode(0o600).sync().prepare(b"secret").expect("prepare");
        let tmp_mode = std::fs::metadata(&pending.tmp).expect("temporary").permissions().mode();
        assert_eq!(tmp_mode & 0o777, 0o600, "the temporary is private before it holds the secret's name");
        pending.commit().expect("commit");
        assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
    }

    #[test]
    fn pending_appears_only_on_commit_and_is_removed_when_dropped() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let path = tmp.path().join("meta.json");
        let pending = Atomic::new(&path).prepare(b"{}").expect("prepare");
        assert!(!path.exists(), "not in place before the commit");
        drop(pending);
        assert!(names(tmp.path()).is_empty(), "a dropped temporary is removed");
        Atomic::new(&path).prepare(b"{}").expect("prepare").commit().expect("commit");
        assert_eq!(names(tmp.path()), ["meta.json"]);
    }

    #[test]
    fn own_dir_only_does_not_make_a_removed_tree_again() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let inner = tmp.path().join("branch").join("results").join("r.json");
        let err = Atomic::new(&inner).own_dir_only().write(b"x").expect_err("branch/ is gone");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(!tmp.path().join("branch").exists());
        std::fs::create_dir(tmp.path().join("branch")).expect("branch");
        Atomic::new(&inner).own_dir_only().write(b"x").expect("results/ is made under an existing branch/");
        assert_eq!(std::fs::read(&inner).expect("read"), b"x");
    }
}
