//! The append-only event log of a branch: `events/events.jsonl`, one JSON object per line.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use protocol::events::Event;
use serde::Serialize;

use super::{Result, SubstrateError};

/// Appends one event as one line, with a single `write` on an `O_APPEND` descriptor, so lines
/// from concurrent writers (agents and the coordinator) never interleave.
pub fn append_event(path: &Path, event: &Event) -> Result<()> {
    let mut line = serde_json::to_vec(event).expect("events always serialize");
    line.push(b'\n');
    // Without O_CREAT first: opening an existing file then needs no exclusive lock on the
    // directory, which every claimer would otherwise queue on.
    let f = match OpenOptions::new().append(true).open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // events/ is created with the branch; recreate it (one level, never the branch
            // directory itself) if someone removed it.
            if let Some(dir) = path.parent()
                && !dir.exists()
                && dir.parent().is_some_and(Path::is_dir)
            {
                let _ = std::fs::create_dir(dir);
            }
            OpenOptions::new().append(true).create(true).open(path)
        }
        other => other,
    };
    let mut f = f.map_err(SubstrateError::io("opening event log", path))?;
    f.write_all(&line).map_err(SubstrateError::io("appending to event log", path))
}

/// Every event of the swarm's log and of every branch's, oldest first (a stable sort by time),
/// each once: an event about a branch is written to both logs byte for byte the same, and the
/// copies need not be adjacent once sorted (other events may share their millisecond). Logs
/// that cannot be read are skipped, as are their corrupt lines.
pub fn all_events(home: &super::Home) -> Vec<Event> {
    let mut out = vec![];
    let mut add = |p: &Path| {
        if let Ok(log) = read_events(p) {
            out.extend(log.events);
        }
    };
    add(&crate::layout::Layout::new(home.root()).events_file());
    for b in home.branches().unwrap_or_default() {
        if let Ok(bd) = home.branch_dir(&b) {
            add(&bd.events_file());
        }
    }
    out.sort_by(|a, b| a.at.cmp(&b.at));
    let mut seen = std::collections::HashSet::new();
    out.into_iter().filter(|e| seen.insert(serde_json::to_string(e).expect("events always serialize"))).collect()
}

/// A line of an event log that did not parse.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorruptLine {
    /// 1-based.
    pub line: usize,
    pub error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EventLog {
    pub events: Vec<Event>,
    /// Lines that are not events (a torn last line after a crash, a hand edit): skipped.
    pub corrupt: Vec<CorruptLine>,
}

/// Reads an event log; a missing file is an empty log.
pub fn read_events(path: &Path) -> Result<EventLog> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EventLog::default()),
        Err(e) => return Err(SubstrateError::Io { op: "reading event log", path: path.to_path_buf(), source: e }),
    };
    let mut log = EventLog::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match protocol::format::parse_versioned::<Event>(line.as_bytes(), "event", protocol::events::EVENT_VERSION) {
            Ok(e) => log.events.push(e),
            Err(e) => log.corrupt.push(CorruptLine { line: i + 1, error: e.to_string() }),
        }
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::events::EventKind;

    #[test]
    fn appends_and_skips_corrupt_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        append_event(&path, &Event::new("r", EventKind::WorktreeAdded { base: "abc".into() })).unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"v\":1,\"trunc").unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"\n").unwrap();
        append_event(&path, &Event::new("r", EventKind::WorktreeRemoved { archived: None })).unwrap();
        let log = read_events(&path).unwrap();
        assert_eq!(log.events.len(), 2);
        assert_eq!(log.corrupt.len(), 1);
        assert_eq!(log.corrupt[0].line, 2);
    }

    #[test]
    fn a_line_of_a_newer_version_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let e = Event::new("r", EventKind::WorktreeAdded { base: "abc".into() });
        append_event(&path, &e).unwrap();
        let newer = serde_json::to_string(&e).unwrap().replacen("\"v\":1", "\"v\":9", 1);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(format!("{newer}\n").as_bytes())
            .unwrap();
        let log = read_events(&path).unwrap();
        assert_eq!((log.events.len(), log.corrupt.len()), (1, 1));
        assert!(log.corrupt[0].error.contains("event version 9 is newer than this build"), "{:?}", log.corrupt[0]);
    }
}
