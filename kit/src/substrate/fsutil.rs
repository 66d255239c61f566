//! Small file-system helpers shared by the substrate: atomic replace (`kit::files`' with typed
//! errors), JSON reads, moving a file aside, process liveness.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use protocol::lease::FormatError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Result, SubstrateError};

pub(crate) use crate::files::unique_suffix;
use crate::files::{Atomic, Pending};

pub(crate) fn now() -> String {
    protocol::timestamp(SystemTime::now())
}

/// `kit::files`' write-temp-then-rename with the substrate's errors. Only the file's own
/// directory is created when missing (results/, say): a write into a branch directory someone
/// removed fails rather than making it again.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let pending = prepare(path, bytes)?;
    commit(pending, path)
}

/// The temporary of [`write_atomic`], for a file that must appear only once something else
/// exists: [`commit`] renames it into place.
pub(crate) fn prepare(path: &Path, bytes: &[u8]) -> Result<Pending> {
    Atomic::new(path).own_dir_only().prepare(bytes).map_err(SubstrateError::io("writing", path))
}

pub(crate) fn commit(pending: Pending, path: &Path) -> Result<()> {
    pending.commit().map_err(SubstrateError::io("renaming into place", path))
}

pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("substrate file types always serialize");
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a versioned substrate file with `parse` (one of `protocol::lease::parse_*`, which
/// refuse a newer version). `Ok(None)` when it does not exist; `Corrupt` (naming the field) when
/// it does not parse; `Format` when it is of a newer version than this build reads.
pub(crate) fn read_versioned<T: DeserializeOwned>(
    path: &Path,
    parse: fn(&[u8]) -> std::result::Result<T, FormatError>,
) -> Result<Option<T>> {
    let bytes = match read_small(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SubstrateError::Io { op: "reading", path: path.to_path_buf(), source: e }),
    };
    parse(&bytes).map(Some).map_err(|e| match e {
        FormatError::Json { what, source } => {
            SubstrateError::Corrupt { what, path: path.to_path_buf(), source: with_field::<T>(&bytes, source) }
        }
        newer => SubstrateError::Format { path: path.to_path_buf(), source: newer },
    })
}

/// `e` with the field it is about (`field `state`: expected value at line 1 column 9`): serde's
/// own message does not always say (an enum given a number reads "expected value"). The bytes
/// are parsed again, only on this error path.
fn with_field<T: DeserializeOwned>(bytes: &[u8], e: serde_json::Error) -> serde_json::Error {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(located) if !located.path().to_string().is_empty() && located.path().to_string() != "." => {
            <serde_json::Error as serde::de::Error>::custom(format!("field `{}`: {e}", located.path()))
        }
        _ => e,
    }
}

/// Reads a whole file in as few system calls as possible (open, read, close for a file under
/// 16 KiB). Substrate files are replaced by rename, never written in place, so a short read is
/// the end of the file.
pub(crate) fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    loop {
        let n = f.read(&mut buf[len..])?;
        len += n;
        if n == 0 || len < buf.len() {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    Ok(buf)
}

pub(crate) fn read_all(f: &mut File) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(SubstrateError::io("creating directory", path))
}

/// Moves `path` into `<its dir>/quarantine/` under a name that cannot collide; returns the
/// new path.
pub(crate) fn quarantine(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().expect("substrate paths always have a parent directory").join("quarantine");
    create_dir_all(&dir)?;
    let name = path.file_name().expect("substrate paths always have a file name").to_string_lossy();
    let to = dir.join(format!("{name}.{}", unique_suffix()));
    fs::rename(path, &to).map_err(SubstrateError::io("quarantining", path))?;
    Ok(to)
}

/// File names in `dir` that are regular files, skipping dot files (temporaries); an absent
/// directory is empty.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SubstrateError::Io { op: "listing", path: dir.to_path_buf(), source: e }),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(SubstrateError::io("listing", dir))?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// How long ago `t` was (zero when it is in the future).
pub(crate) fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or(Duration::ZERO)
}

/// Whether a process with this pid exists on this host (a zombie counts as existing).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}

/// This machine's host name, as recorded in lease files.
pub fn hostname() -> String {
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = fs::read_to_string(path) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "localhost".to_string())
}
