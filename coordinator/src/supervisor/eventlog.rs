//! The supervisor's half of `worktrees/.swarm/events.jsonl`: typed events, one `write` per line on
//! an `O_APPEND` file, so concurrent writers never interleave within a line.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use protocol::events::{Event, EventKind};

pub struct EventLog {
    file: File,
    path: PathBuf,
    run_id: String,
}

impl EventLog {
    pub fn open(path: &Path, run_id: &str) -> std::io::Result<EventLog> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog { file, path: path.to_path_buf(), run_id: run_id.to_string() })
    }

    /// Append one event. A failed write is reported on stderr and otherwise ignored: losing a log
    /// line must not take the swarm down.
    pub fn emit(&self, agent: Option<&str>, kind: EventKind) {
        let mut event = Event::new(self.run_id.clone(), kind);
        event.agent = agent.map(String::from);
        let mut line = serde_json::to_vec(&event).expect("events always serialize");
        line.push(b'\n');
        if let Err(e) = (&self.file).write_all(&line) {
            eprintln!("warning: {}: cannot append an event: {e}", self.path.display());
        }
    }
}
