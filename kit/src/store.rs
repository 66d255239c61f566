//! The file-backed A2A task store.
//!
//! Every task event of an agent is one line of a single append-only JSONL log,
//! `<state_dir>/tasks/log.jsonl`: `{"task": id, "seq": n, "event": ...}`. A task's first line is
//! the task as submitted, each further line a status or artefact update, exactly the events a
//! `message/stream` client sees, numbered from 0. Replaying a task's lines rebuilds it, so
//! `tasks/get` and `tasks/resubscribe` work after the agent restarts, and a resubscribing client
//! that sends `Last-Event-ID` gets exactly the events it missed. One log rather than a file per
//! task: creating a file per task cost more than everything else a request does (ext4 inode
//! allocation; see BENCHMARKS.md). The log rotates once (to `log.1.jsonl`) past 32 MiB, so it
//! stays bounded; older tasks are gone from then on. A torn last line (a crash mid-write) is cut
//! off at open.
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

/// One line of the log.
#[derive(Debug, Deserialize)]
struct LogLine {
    task: String,
    #[allow(dead_code)] // for people reading the file; replay counts a task's lines
    seq: u64,
    event: StreamEvent,
}

/// The same line, serialized without taking the event.
#[derive(Serialize)]
struct LogLineRef<'a> {
    task: &'a str,
    seq: u64,
    event: &'a StreamEvent,
}

/// The agent's log file, shared by every task.
struct Log {
    path: PathBuf,
    file: Mutex<File>,
}

impl Log {
    fn write(&self, line: &[u8]) -> Result<(), StoreError> {
        let mut f = self.file.lock().expect("log lock");
        f.write_all(line).map_err(|source| StoreError::Io { path: self.path.clone(), source })
    }
}

struct Record {
    task: Task,
    events: Vec<StreamEvent>,
    /// Whether more events may be written (false once terminal).
    open: bool,
    cancel: Option<watch::Sender<bool>>,
    push: Vec<PushNotificationConfig>,
}

/// A live task: its record plus a counter that wakes subscribers.
pub struct Entry {
    rec: Mutex<Record>,
    seq: watch::Sender<u64>,
    log: Arc<Log>,
}

/// Tasks kept in memory before finished ones are dropped (they reload from the log).
const MAX_CACHED: usize = 512;

/// The log rotates past this size.
const ROTATE_BYTES: u64 = 32 << 20;

pub struct TaskStore {
    dir: PathBuf,
    log: Arc<Log>,
    tasks: Mutex<HashMap<String, Arc<Entry>>>,
}

fn now() -> String {
    protocol::timestamp(std::time::SystemTime::now())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

impl TaskStore {
    /// Open (creating) `<state_dir>/tasks/log.jsonl`, cutting a torn last line and rotating a
    /// log past its size limit.
    pub fn open(state_dir: &Path) -> Result<TaskStore, StoreError> {
        let dir = state_dir.join("tasks");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join("log.jsonl");
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.len() > ROTATE_BYTES {
                std::fs::rename(&path, dir.join("log.1.jsonl")).map_err(io(&path))?;
            } else {
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                let good = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                if good < bytes.len() {
                    let f = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
                    f.set_len(good as u64).map_err(io(&path))?;
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        let log = Arc::new(Log { path, file: Mutex::new(file) });
        Ok(TaskStore { dir, log, tasks: Mutex::new(HashMap::new()) })
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
        let (cancel_tx, _) = watch::channel(false);
        let entry = Arc::new(Entry {
            rec: Mutex::new(Record {
                task: task.clone(),
                events: vec![],
                open: true,
                cancel: Some(cancel_tx),
                push: vec![],
            }),
            seq: watch::channel(0).0,
            log: self.log.clone(),
        });
        entry.append(StreamEvent::Task(task))?;
        let mut map = self.tasks.lock().expect("task map lock");
        if map.len() >= MAX_CACHED {
            // Finished tasks nobody is holding are in the log: drop them from memory.
            map.retain(|_, e| Arc::strong_count(e) > 1 || !e.task_state().is_terminal());
        }
        map.insert(id.to_string(), entry.clone());
        Ok(entry)
    }

    /// A task's events from the log (and the rotated one), in order.
    fn replay(&self, id: &str) -> Vec<StreamEvent> {
        let needle = format!("\"task\":\"{id}\"");
        let mut events = vec![];
        for name in ["log.1.jsonl", "log.jsonl"] {
            let Ok(text) = std::fs::read_to_string(self.dir.join(name)) else { continue };
            for line in text.lines().filter(|l| l.contains(&needle)) {
                match serde_json::from_str::<LogLine>(line) {
                    Ok(l) if l.task == id => {
                        if matches!(l.event, StreamEvent::Task(_)) {
                            events.clear(); // a task starts once; a repeat id starts afresh
                        }
                        events.push(l.event);
                    }
                    _ => {}
                }
            }
        }
        events
    }

    /// Look a task up in memory, else replay it from the log. A task found in the log in a
    /// non-terminal state belonged to a previous run of this agent: it is marked failed, since
    /// its handler is gone (the lease substrate re-runs swarm work; A2A clients resend).
    pub fn get(&self, id: &str) -> Result<Arc<Entry>, StoreError> {
        if protocol::names::check_task_id(id).is_err() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        if let Some(e) = self.tasks.lock().expect("task map lock").get(id) {
            return Ok(e.clone());
        }
        let events = self.replay(id);
        let Some(StreamEvent::Task(mut task)) = events.first().cloned() else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        for ev in &events[1..] {
            apply(&mut task, ev);
        }
        let open = !task.status.state.is_terminal();
        let entry = Arc::new(Entry {
            rec: Mutex::new(Record { task, events, open, cancel: None, push: vec![] }),
            seq: watch::channel(0).0,
            log: self.log.clone(),
        });
        if open {
            let msg = crate::server::agent_text(
                "interrupted: the agent restarted while this task was running; send the message again",
            );
            entry.status(TaskState::Failed, Some(msg), true)?;
        }
        let mut map = self.tasks.lock().expect("task map lock");
        Ok(map.entry(id.to_string()).or_insert(entry).clone())
    }

    /// The log file, for messages.
    pub fn log_path(&self) -> &Path {
        &self.log.path
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

    fn append(&self, event: StreamEvent) -> Result<(), StoreError> {
        let mut rec = self.rec.lock().expect("task lock");
        self.append_locked(&mut rec, event)
    }

    fn append_locked(&self, rec: &mut Record, event: StreamEvent) -> Result<(), StoreError> {
        let seq = rec.events.len() as u64;
        let mut line = serde_json::to_vec(&LogLineRef { task: &rec.task.id, seq, event: &event })
            .expect("stream events serialize");
        line.push(b'\n');
        if rec.open {
            self.log.write(&line)?;
        }
        if seq > 0 {
            apply(&mut rec.task, &event);
        }
        rec.events.push(event);
        self.seq.send_replace(seq + 1);
        Ok(())
    }

    /// Record a status change. Returns false (and writes nothing) if the task is already terminal.
    pub fn status(&self, state: TaskState, message: Option<Message>, is_final: bool) -> Result<bool, StoreError> {
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
        self.append_locked(&mut rec, ev)?;
        if state.is_terminal() {
            rec.open = false;
            if let Some(c) = rec.cancel.take() {
                c.send_replace(true);
            }
        }
        Ok(true)
    }

    pub fn artifact(&self, artifact: Artifact) -> Result<(), StoreError> {
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
        self.append_locked(&mut rec, ev)
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
        let p = store.log_path().to_path_buf();
        e.status(TaskState::Working, None, false).unwrap();
        let done = store.create("t2", "c1", Message::new(Role::User, "m", vec![Part::text("hi")])).unwrap();
        done.status(TaskState::Completed, None, true).unwrap();
        drop((store, e, done));
        // Simulate a crash mid-write: a torn line at the end.
        OpenOptions::new().append(true).open(&p).unwrap().write_all(b"{\"task\":\"t1\",\"seq\":2,\"ev").unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        let t = store.get("t1").unwrap().task();
        // Working when the agent died -> failed, with the reason.
        assert_eq!(t.status.state, TaskState::Failed);
        assert!(t.status.message.unwrap().text().contains("restarted"));
        assert_eq!(
            store.get("t2").unwrap().task().status.state,
            TaskState::Completed,
            "finished tasks stay as they were"
        );
        // The log stays readable after the repair: a third open sees the same states.
        drop(store);
        let store = TaskStore::open(dir.path()).unwrap();
        assert_eq!(store.get("t1").unwrap().task().status.state, TaskState::Failed);
        assert_eq!(store.get("t1").unwrap().events_from(0).len(), 3, "task, working, failed");
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
            e.status(TaskState::Completed, None, true).unwrap();
        }
        assert!(store.tasks.lock().unwrap().len() <= MAX_CACHED, "finished tasks were evicted");
        let t = store.get("t0").unwrap().task();
        assert_eq!(t.status.state, TaskState::Completed, "an evicted task reloads from the log, unchanged");
    }
}
