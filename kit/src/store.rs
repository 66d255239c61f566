//! The file-backed A2A task store.
//!
//! Each task is one append-only JSONL file `<state_dir>/tasks/<task_id>.jsonl`: the first line
//! is the task as submitted, each further line a status or artefact update, exactly the events
//! a `message/stream` client sees, numbered from 0. Replaying the file rebuilds the task, so
//! `tasks/get` and `tasks/resubscribe` work after the agent restarts, and a resubscribing client
//! that sends `Last-Event-ID` gets exactly the events it missed.
//!
//! Task execution is decoupled from HTTP: handlers run on their own tokio task and write here;
//! connections only read.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protocol::{
    Artifact, ArtifactUpdateKind, Message, PushNotificationConfig, StatusUpdateKind, StreamEvent, Task,
    TaskArtifactUpdateEvent, TaskState, TaskStatus, TaskStatusUpdateEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task {0} not found")]
    NotFound(String),
    #[error("writing task log {path}: {source}; check that the state directory is writable")]
    Io { path: PathBuf, source: std::io::Error },
}

/// One line of a task log.
#[derive(Debug, Deserialize)]
struct LogLine {
    #[allow(dead_code)] // written for people reading the file; replay counts lines
    seq: u64,
    event: StreamEvent,
}

/// The same line, serialized without taking the event.
#[derive(Serialize)]
struct LogLineRef<'a> {
    seq: u64,
    event: &'a StreamEvent,
}

struct Record {
    task: Task,
    events: Vec<StreamEvent>,
    file: Option<File>,
    cancel: Option<watch::Sender<bool>>,
    push: Vec<PushNotificationConfig>,
}

/// A live task: its record plus a counter that wakes subscribers.
pub struct Entry {
    rec: Mutex<Record>,
    seq: watch::Sender<u64>,
}

/// Tasks kept in memory before finished ones are dropped (they reload from their files).
const MAX_CACHED: usize = 512;

pub struct TaskStore {
    dir: PathBuf,
    tasks: Mutex<HashMap<String, Arc<Entry>>>,
}

fn now() -> String {
    protocol::timestamp(std::time::SystemTime::now())
}

impl TaskStore {
    /// Open (creating) `<state_dir>/tasks`.
    pub fn open(state_dir: &Path) -> Result<TaskStore, StoreError> {
        let dir = state_dir.join("tasks");
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
        Ok(TaskStore { dir, tasks: Mutex::new(HashMap::new()) })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.jsonl"))
    }

    /// Create a task in state `submitted` for `message`, persisted before this returns.
    pub fn create(&self, id: &str, context_id: &str, mut message: Message) -> Result<Arc<Entry>, StoreError> {
        message.task_id = Some(id.to_string());
        message.context_id = Some(context_id.to_string());
        let task = Task {
            id: id.to_string(),
            context_id: context_id.to_string(),
            status: TaskStatus { state: TaskState::Submitted, message: None, timestamp: Some(now()) },
            history: vec![message],
            artifacts: vec![],
            metadata: None,
            kind: Default::default(),
        };
        let path = self.path(id);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        let (cancel_tx, _) = watch::channel(false);
        let entry = Arc::new(Entry {
            rec: Mutex::new(Record {
                task: task.clone(),
                events: vec![],
                file: Some(file),
                cancel: Some(cancel_tx),
                push: vec![],
            }),
            seq: watch::channel(0).0,
        });
        entry.append(StreamEvent::Task(task), &path)?;
        let mut map = self.tasks.lock().expect("task map lock");
        if map.len() >= MAX_CACHED {
            // Finished tasks nobody is holding are on disk: drop them from memory.
            map.retain(|_, e| Arc::strong_count(e) > 1 || !e.task_state().is_terminal());
        }
        map.insert(id.to_string(), entry.clone());
        Ok(entry)
    }

    /// Look a task up in memory, else replay its log from disk. A task found on disk in a
    /// non-terminal state belonged to a previous run of this agent: it is marked failed, since
    /// its handler is gone (the lease substrate re-runs swarm work; A2A clients resend).
    pub fn get(&self, id: &str) -> Result<Arc<Entry>, StoreError> {
        if protocol::names::check_task_id(id).is_err() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        if let Some(e) = self.tasks.lock().expect("task map lock").get(id) {
            return Ok(e.clone());
        }
        let path = self.path(id);
        let text = std::fs::read_to_string(&path).map_err(|_| StoreError::NotFound(id.to_string()))?;
        let mut events = vec![];
        let mut good = 0;
        for line in text.split_inclusive('\n') {
            // A torn last line (crash mid-write) is cut off: everything before it stands.
            match serde_json::from_str::<LogLine>(line.trim_end()) {
                Ok(l) if line.ends_with('\n') => events.push(l.event),
                _ => break,
            }
            good += line.len();
        }
        if good < text.len() {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| StoreError::Io { path: path.clone(), source })?;
            f.set_len(good as u64).map_err(|source| StoreError::Io { path: path.clone(), source })?;
        }
        let Some(StreamEvent::Task(mut task)) = events.first().cloned() else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        for ev in &events[1..] {
            apply(&mut task, ev);
        }
        let file = OpenOptions::new().append(true).open(&path).ok();
        let entry = Arc::new(Entry {
            rec: Mutex::new(Record { task, events, file, cancel: None, push: vec![] }),
            seq: watch::channel(0).0,
        });
        let state = entry.task().status.state;
        if !state.is_terminal() {
            let msg = crate::server::agent_text(
                "interrupted: the agent restarted while this task was running; send the message again",
            );
            entry.status(TaskState::Failed, Some(msg), true, &path)?;
        }
        let mut map = self.tasks.lock().expect("task map lock");
        Ok(map.entry(id.to_string()).or_insert(entry).clone())
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.path(id)
    }
}

/// Apply an update event to a task snapshot.
fn apply(task: &mut Task, ev: &StreamEvent) {
    match ev {
        StreamEvent::Status(s) => {
            task.status = s.status.clone();
            if let Some(m) = &s.status.message {
                task.history.push(m.clone());
            }
        }
        StreamEvent::Artifact(a) => {
            if a.append == Some(true)
                && let Some(existing) = task.artifacts.iter_mut().find(|x| x.artifact_id == a.artifact.artifact_id)
            {
                existing.parts.extend(a.artifact.parts.iter().cloned());
                return;
            }
            task.artifacts.retain(|x| x.artifact_id != a.artifact.artifact_id);
            task.artifacts.push(a.artifact.clone());
        }
        StreamEvent::Task(t) => *task = t.clone(),
        StreamEvent::Message(m) => task.history.push(m.clone()),
    }
}

impl Entry {
    pub fn task_state(&self) -> TaskState {
        self.rec.lock().expect("task lock").task.status.state
    }

    pub fn task(&self) -> Task {
        self.rec.lock().expect("task lock").task.clone()
    }

    /// Events from index `from` on, and whether the log is closed (a final event is in it).
    pub fn events_from(&self, from: usize) -> Vec<StreamEvent> {
        let rec = self.rec.lock().expect("task lock");
        rec.events.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }

    pub fn cancel_signal(&self) -> watch::Receiver<bool> {
        let rec = self.rec.lock().expect("task lock");
        match &rec.cancel {
            Some(tx) => tx.subscribe(),
            None => watch::channel(true).1,
        }
    }

    fn append(&self, event: StreamEvent, path: &Path) -> Result<(), StoreError> {
        let mut rec = self.rec.lock().expect("task lock");
        self.append_locked(&mut rec, event, path)
    }

    fn append_locked(&self, rec: &mut Record, event: StreamEvent, path: &Path) -> Result<(), StoreError> {
        let seq = rec.events.len() as u64;
        let mut line = serde_json::to_vec(&LogLineRef { seq, event: &event }).expect("stream events serialize");
        line.push(b'\n');
        if let Some(f) = rec.file.as_mut() {
            f.write_all(&line).map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
        }
        if seq > 0 {
            apply(&mut rec.task, &event);
        }
        rec.events.push(event);
        self.seq.send_replace(seq + 1);
        Ok(())
    }

    /// Record a status change. Returns false (and writes nothing) if the task is already terminal.
    pub fn status(
        &self,
        state: TaskState,
        message: Option<Message>,
        is_final: bool,
        path: &Path,
    ) -> Result<bool, StoreError> {
        let mut rec = self.rec.lock().expect("task lock");
        if rec.task.status.state.is_terminal() {
            return Ok(false);
        }
        let mut message = message;
        if let Some(m) = message.as_mut() {
            m.task_id = Some(rec.task.id.clone());
            m.context_id = Some(rec.task.context_id.clone());
        }
        let ev = StreamEvent::Status(TaskStatusUpdateEvent {
            task_id: rec.task.id.clone(),
            context_id: rec.task.context_id.clone(),
            kind: StatusUpdateKind::Tag,
            status: TaskStatus { state, message, timestamp: Some(now()) },
            is_final,
            metadata: None,
        });
        self.append_locked(&mut rec, ev, path)?;
        if state.is_terminal() {
            rec.file = None;
            if let Some(c) = rec.cancel.take() {
                c.send_replace(true);
            }
        }
        Ok(true)
    }

    pub fn artifact(&self, artifact: Artifact, path: &Path) -> Result<(), StoreError> {
        let mut rec = self.rec.lock().expect("task lock");
        if rec.task.status.state.is_terminal() {
            return Ok(());
        }
        let ev = StreamEvent::Artifact(TaskArtifactUpdateEvent {
            task_id: rec.task.id.clone(),
            context_id: rec.task.context_id.clone(),
            kind: ArtifactUpdateKind::Tag,
            artifact,
            append: None,
            last_chunk: Some(true),
            metadata: None,
        });
        self.append_locked(&mut rec, ev, path)
    }

    pub fn push_configs(&self) -> Vec<PushNotificationConfig> {
        self.rec.lock().expect("task lock").push.clone()
    }

    pub fn set_push(&self, cfg: PushNotificationConfig) {
        let mut rec = self.rec.lock().expect("task lock");
        rec.push.retain(|c| c.id != cfg.id);
        rec.push.push(cfg);
    }

    pub fn delete_push(&self, id: &str) -> bool {
        let mut rec = self.rec.lock().expect("task lock");
        let before = rec.push.len();
        rec.push.retain(|c| c.id.as_deref() != Some(id));
        before != rec.push.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Part, Role};

    #[test]
    fn replay_after_restart_and_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        let e = store.create("t1", "c1", Message::new(Role::User, "m", vec![Part::text("hi")])).unwrap();
        let p = store.log_path("t1");
        e.status(TaskState::Working, None, false, &p).unwrap();
        drop(store);
        // Simulate a crash mid-write: a torn line at the end.
        OpenOptions::new().append(true).open(&p).unwrap().write_all(b"{\"seq\":2,\"ev").unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        let t = store.get("t1").unwrap().task();
        // Working when the agent died -> failed, with the reason.
        assert_eq!(t.status.state, TaskState::Failed);
        assert!(t.status.message.unwrap().text().contains("restarted"));
        assert!(matches!(store.get("../t1"), Err(StoreError::NotFound(_))));
        assert!(matches!(store.get("nope"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn finished_tasks_leave_memory_and_reload_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        for n in 0..MAX_CACHED + 10 {
            let id = format!("t{n}");
            let e = store.create(&id, "c", Message::new(Role::User, "m", vec![Part::text("hi")])).unwrap();
            e.status(TaskState::Completed, None, true, &store.log_path(&id)).unwrap();
        }
        assert!(store.tasks.lock().unwrap().len() <= MAX_CACHED, "finished tasks were evicted");
        let t = store.get("t0").unwrap().task();
        assert_eq!(t.status.state, TaskState::Completed, "an evicted task reloads from its file, unchanged");
    }
}
