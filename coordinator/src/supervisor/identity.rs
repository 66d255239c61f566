//! Who a process is beyond its pid, which the kernel recycles: its start time, boot, session and
//! executable, read from `/proc`. `ratchet up` records this for every member in `state.json` and
//! checks it before it signals a member of a dead swarm, so it never signals a stranger that
//! happens to have been given the same pid.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A recorded process identity (Linux `/proc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// Start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`): two processes that
    /// share a pid never share it within one boot.
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id`: start times count from this boot.
    pub boot_id: String,
    /// The session the process was in (field 6); a process group of another session is not ours.
    pub session: i32,
    /// `/proc/<pid>/exe` when recorded (after the member printed its listening line, so a
    /// wrapper that `exec`s the agent is recorded as the agent); ` (deleted)` (a rebuilt binary)
    /// is not part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<PathBuf>,
}

/// The fields of `/proc/<pid>/stat` this module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// `R`, `S`, `Z`, ...
    pub state: char,
    pub pgrp: i32,
    pub session: i32,
    pub start_ticks: u64,
}

impl Stat {
    /// A zombie has ended; only its parent's wait is missing.
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parse a `/proc/<pid>/stat` line: `pid (comm) state ppid pgrp session ... starttime(22) ...`.
/// `comm` may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat`, parsed; `None` when there is no such process.
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process on the machine (that we may read).
pub fn all() -> Vec<Stat> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok())).filter_map(stat).collect()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

fn exe(pid: i32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = link.to_string_lossy();
    Some(match text.strip_suffix(" (deleted)") {
        Some(kept) => PathBuf::from(kept),
        None => link,
    })
}

/// The identity of live process `pid` now; `None` when it is gone (or a zombie).
pub fn identify(pid: u32) -> Option<ProcessIdentity> {
    let pid = i32::try_from(pid).ok()?;
    let st = stat(pid).filter(|s| !s.is_zombie())?;
    Some(ProcessIdentity { start_ticks: st.start_ticks, boot_id: boot_id(), session: st.session, exe: exe(pid) })
}

/// Whether live process `pid` is the process `id` was recorded from: same boot, same start time,
/// same session, and (when both are known) the same executable.
pub fn is_same(pid: u32, id: &ProcessIdentity) -> bool {
    let Some(now) = identify(pid) else { return false };
    now.boot_id == id.boot_id
        && now.start_ticks == id.start_ticks
        && now.session == id.session
        && match (&now.exe, &id.exe) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

/// The live members of the process group led (or once led) by the process recorded as `leader`
/// with identity `id`. When the leader itself still runs, it must be that very process; when it
/// is gone, a member counts only if it started after the leader, in the same boot and session
/// (the kernel does not hand out a group id again while any member of the group lives, so such
/// members are the leader's).
pub fn group_members(leader: u32, id: &ProcessIdentity) -> Vec<i32> {
    let Ok(pgid) = i32::try_from(leader) else { return Vec::new() };
    if id.boot_id != boot_id() {
        return Vec::new();
    }
    let procs: Vec<Stat> = all().into_iter().filter(|s| s.pgrp == pgid && !s.is_zombie()).collect();
    match procs.iter().find(|s| s.pid == pgid) {
        Some(_) if !is_same(leader, id) => Vec::new(),
        _ => {
            procs.iter().filter(|s| s.session == id.session && s.start_ticks >= id.start_ticks).map(|s| s.pid).collect()
        }
    }
}

/// The file name of the recorded executable (for messages).
pub fn exe_name(id: &ProcessIdentity) -> String {
    id.exe.as_deref().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names() {
        let line = "4242 (a) b (c)) S 1 4242 4000 34816 4242 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let st = parse_stat(line).unwrap();
        assert_eq!((st.pid, st.state, st.pgrp, st.session, st.start_ticks), (4242, 'S', 4242, 4000, 987654));
        assert_eq!(parse_stat("12 (x) Z"), None);
    }

    #[test]
    fn this_process_is_itself_and_a_changed_start_time_is_not() {
        let me = std::process::id();
        let id = identify(me).expect("this process is alive");
        assert!(is_same(me, &id));
        assert_eq!(id.exe, std::env::current_exe().ok());
        let mut other = id.clone();
        other.start_ticks += 1;
        assert!(!is_same(me, &other), "a recycled pid has another start time");
        let mut rebooted = id.clone();
        rebooted.boot_id = "another boot".into();
        assert!(!is_same(me, &rebooted));
        assert!(group_members(me, &rebooted).is_empty());
    }
}
