//! The file-backed A2A task store.
//!
//! Every task event of an agent is one line of an append-only JSONL log under
//! `<state_dir>/tasks/`: `{"task": id, "seq": n, "event": ...}`. A task's first line (seq 0) is
//! the task as submitted, each further line a status or artefact update, exactly the events a
//! `message/stream` client sees, numbered from 0. Replaying a task's lines rebuilds it, so
//! `tasks/get` and `tasks/resubscribe` work after the agent restarts, and a resubscribing client
//! that sends `Last-Event-ID` gets exactly the events it missed. One log rather than a file per
//! task: creating a file per task cost more than everything else a request does (ext4 inode
//! allocation; see BENCHMARKS.md).
//!
//! **Segments and retention.** The log is a few segments: `log.jsonl` (appended to), and the
//! rotated `log.1.jsonl` (newer) to `log.2.jsonl` (older). The active segment rotates while the
//! agent runs, once [`Retention::segment_bytes`] of new lines went into it; the segment past
//! [`Retention::keep_rotated`] is deleted. So an agent's log never holds more than
//! `(keep_rotated + 1) * segment_bytes` (48 MiB by default), plus the lines of the tasks still
//! running, which each rotation copies into the new segment (a running task never loses its
//! beginning). A finished task answers `tasks/get` for at least `keep_rotated * segment_bytes`
//! (32 MiB) of later log traffic, then `TaskNotFound`.
//!
//! **Index.** Where each line of each task is (segment, offset, length) is kept in memory, rebuilt
//! by one scan of the segments at open. A lookup of a task that is not in memory reads just its
//! lines (`pread`), on a blocking thread; an id the index does not know is answered at once,
//! without touching the disk.
//!
//! **Memory.** Running tasks stay in memory; finished ones leave it once more than
//! [`MAX_CACHED`] tasks or [`CACHE_BYTES`] of lines are cached (they reload from the log).
//!
//! **Crash safety.** Lines are only appended (one `write` each); a torn last line (a crash
//! mid-write) is cut off at open. Rotation is renames; a crash in the middle leaves segments that
//! open reads as they are. A line copied by rotation repeats one already written: replay places
//! lines by their `seq`, so a repeat changes nothing.
//!
//! Task execution is decoupled from HTTP: handlers run on their own tokio task and write here;
//! connections only read. File work other than the append of a line (reads, rotation, the scan
//! at open) runs off the async executor.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    #[error("{op} task log {path}: {source}; check that the state directory is writable")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

/// How much of the log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The active segment rotates once this many bytes of new lines went into it.
    pub segment_bytes: u64,
    /// Rotated segments kept (`log.1.jsonl` .. `log.<keep_rotated>.jsonl`); older ones are deleted.
    pub keep_rotated: usize,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention { segment_bytes: 16 << 20, keep_rotated: 2 }
    }
}

/// Finished tasks cached in memory, at most (running ones are always there).
pub const MAX_CACHED: usize = 64;

/// Bytes of log lines of the cached tasks, at most, before finished ones are dropped from memory.
pub const CACHE_BYTES: u64 = 8 << 20;

/// One line of the log.
#[derive(Debug, Deserialize)]
struct LogLine {
    task: String,
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

/// Where one line of a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    /// The segment's generation (0 for the oldest at open, +1 per rotation).
    generation: u64,
    offset: u64,
    len: u64,
}

struct Segment {
    generation: u64,
    /// Opened for reading and appending: `pread` works whatever the file is renamed to.
    file: Arc<File>,
}

/// The segments and the index, under one lock.
struct LogState {
    /// Oldest first; the last is the active one.
    segments: VecDeque<Segment>,
    /// Length of the active segment.
    pos: u64,
    /// Bytes of new lines (not copies made by rotation) in the active segment.
    fresh: u64,
    rotating: bool,
    index: HashMap<String, Vec<Loc>>,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments.back().expect("there is always an active segment")
    }
}

/// What the store and every entry share.
struct Shared {
    dir: PathBuf,
    retention: Retention,
    log: Mutex<LogState>,
    tasks: Mutex<HashMap<String, Arc<Entry>>>,
    /// Bytes of log lines of the tasks in `tasks` (an estimate of their memory).
    cached_bytes: AtomicU64,
    /// Lines read back from the log (tests check that a lookup reads no more than it must).
    #[cfg(test)]
    lines_read: AtomicU64,
}

impl Shared {
    fn active_path(&self) -> PathBuf {
        self.dir.join("log.jsonl")
    }

    fn rotated_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("log.{n}.jsonl"))
    }

    /// Append `lines` (whole lines of task `id`, each ending in `\n`) with one `write`; index them.
    /// Returns whether the active segment is due to rotate (the caller starts it once it holds no
    /// task lock).
    fn append(&self, id: &str, lines: &[u8], starts: &[usize], carried: bool) -> Result<bool, StoreError> {
        let mut st = self.log.lock().expect("log lock");
        let generation = st.active().generation;
        let base = st.pos;
        if let Err(source) = st.active().file.as_ref().write_all(lines) {
            // Part of the lines may be in the file (a full disk): end them, so the next line
            // starts on a line of its own, and learn where the file ends.
            let file = st.active().file.clone();
            let _ = file.as_ref().write_all(b"\n");
            st.pos = file.metadata().map(|m| m.len()).unwrap_or(st.pos);
            return Err(StoreError::Io { op: "appending to", path: self.active_path(), source });
        }
        st.pos += lines.len() as u64;
        if !carried {
            st.fresh += lines.len() as u64;
            self.cached_bytes.fetch_add(lines.len() as u64, Ordering::Relaxed);
        }
        let locs = match st.index.get_mut(id) {
            Some(locs) => locs,
            None => st.index.entry(id.to_string()).or_default(),
        };
        for (i, start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(lines.len());
            locs.push(Loc { generation, offset: base + *start as u64, len: (end - start) as u64 });
        }
        let due = st.fresh >= self.retention.segment_bytes && !st.rotating;
        if due {
            st.rotating = true;
        }
        Ok(due)
    }

    /// Rotate: shift the rotated segments' names, start a new active segment, forget (and
    /// delete) the segment past the retention, then copy the running tasks' lines into the new
    /// segment. Blocking: runs on a blocking thread.
    fn rotate(self: &Arc<Shared>) -> Result<(), StoreError> {
        let result = self.rotate_inner();
        self.log.lock().expect("log lock").rotating = false;
        result
    }

    fn rotate_inner(self: &Arc<Shared>) -> Result<(), StoreError> {
        let keep = self.retention.keep_rotated;
        let doomed = self.rotated_path(keep + 1);
        {
            let mut st = self.log.lock().expect("log lock");
            for n in (1..=keep).rev() {
                let from = self.rotated_path(n);
                if from.exists() {
                    rename(&from, &self.rotated_path(n + 1))?;
                }
            }
            let active = self.active_path();
            rename(&active, &self.rotated_path(1))?;
            let file = open_segment(&active)?;
            let generation = st.active().generation + 1;
            st.segments.push_back(Segment { generation, file: Arc::new(file) });
            st.pos = 0;
            st.fresh = 0;
            while st.segments.len() > keep + 1 {
                st.segments.pop_front();
            }
            let oldest = st.segments.front().expect("the active segment").generation;
            st.index.retain(|_, locs| {
                locs.retain(|l| l.generation >= oldest);
                !locs.is_empty()
            });
        }
        // Unlinking a large file can take a while: outside the lock. Already gone is fine.
        match std::fs::remove_file(&doomed) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::Io { op: "deleting", path: doomed, source: e });
            }
            _ => {}
        }
        let running: Vec<Arc<Entry>> = self.tasks.lock().expect("task map lock").values().cloned().collect();
        for entry in running {
            let rec = entry.rec.lock().expect("task lock");
            if !rec.open {
                continue;
            }
            let mut lines = Vec::new();
            let mut starts = Vec::with_capacity(rec.events.len());
            for (seq, event) in rec.events.iter().enumerate() {
                starts.push(lines.len());
                serialize_line(&mut lines, &rec.task.id, seq as u64, event);
            }
            if !lines.is_empty() {
                self.append(&rec.task.id, &lines, &starts, true)?;
            }
        }
        Ok(())
    }

    /// Start a rotation off the async executor (or on a thread of its own outside a runtime).
    fn schedule_rotation(self: &Arc<Shared>) {
        let shared = self.clone();
        let work = move || {
            if let Err(e) = shared.rotate() {
                tracing::error!("rotating the task log: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(work);
            }
            Err(_) => {
                std::thread::spawn(work);
            }
        }
    }

    /// Read task `id`'s lines at `locs` and place them by `seq`: the events from 0 up to the
    /// first missing one. Blocking.
    fn read_task(&self, id: &str, locs: &[(Loc, Arc<File>)]) -> Result<Vec<StreamEvent>, StoreError> {
        let mut by_seq: BTreeMap<u64, StreamEvent> = BTreeMap::new();
        let mut buf = Vec::new();
        for (loc, file) in locs {
            buf.resize(loc.len as usize, 0);
            #[cfg(test)]
            self.lines_read.fetch_add(1, Ordering::Relaxed);
            file.read_exact_at(&mut buf, loc.offset).map_err(|source| StoreError::Io {
                op: "reading",
                path: self.dir.clone(),
                source,
            })?;
            // A line that does not parse (a hand edit, a disk error) is skipped like a torn one.
            if let Ok(line) = serde_json::from_slice::<LogLine>(&buf)
                && line.task == id
            {
                by_seq.entry(line.seq).or_insert(line.event);
            }
        }
        let mut events = Vec::with_capacity(by_seq.len());
        for (expected, (seq, event)) in by_seq.into_iter().enumerate() {
            if seq != expected as u64 {
                break; // lines rotated away: the task ends where its record does
            }
            events.push(event);
        }
        Ok(events)
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::rename(from, to).map_err(|source| StoreError::Io { op: "rotating", path: from.to_path_buf(), source })
}

fn open_segment(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new().read(true).append(true).create(true).open(path).map_err(|source| StoreError::Io {
        op: "opening",
        path: path.to_path_buf(),
        source,
    })
}

fn serialize_line(out: &mut Vec<u8>, id: &str, seq: u64, event: &StreamEvent) {
    serde_json::to_writer(&mut *out, &LogLineRef { task: id, seq, event }).expect("stream events serialize");
    out.push(b'\n');
}

/// The task id of a log line: read from the prefix the store writes (`{"task":"<id>",`),
/// else by parsing the line.
fn line_task(line: &[u8]) -> Option<String> {
    const PREFIX: &[u8] = b"{\"task\":\"";
    if let Some(rest) = line.strip_prefix(PREFIX)
        && let Some(end) = rest.iter().position(|b| *b == b'"' || *b == b'\\')
        && rest[end] == b'"'
    {
        return std::str::from_utf8(&rest[..end]).ok().map(String::from);
    }
    #[derive(Deserialize)]
    struct Head {
        task: String,
    }
    serde_json::from_slice::<Head>(line).ok().map(|h| h.task)
}

/// Index one segment: every complete line's location under its task id. Returns the offset past
/// the last complete line.
fn scan_segment(
    file: &File,
    path: &Path,
    generation: u64,
    index: &mut HashMap<String, Vec<Loc>>,
) -> Result<u64, StoreError> {
    let io = |source| StoreError::Io { op: "reading", path: path.to_path_buf(), source };
    let mut reader = BufReader::with_capacity(256 << 10, file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(offset); // end, or a torn last line
        }
        if let Some(task) = line_task(&line) {
            index.entry(task).or_default().push(Loc { generation, offset, len: n as u64 });
        }
        offset += n as u64;
    }
}

struct Record {
    task: Task,
    events: Vec<StreamEvent>,
    /// Whether more events may be written (false once terminal).
    open: bool,
    cancel: Option<watch::Sender<bool>>,
    push: Vec<PushNotificationConfig>,
    /// Bytes of this task's log lines.
    bytes: u64,
}

/// A live task: its record plus a counter that wakes subscribers.
pub struct Entry {
    rec: Mutex<Record>,
    seq: watch::Sender<u64>,
    shared: Arc<Shared>,
}

pub struct TaskStore {
    shared: Arc<Shared>,
}

fn now() -> String {
    protocol::timestamp(std::time::SystemTime::now())
}

impl TaskStore {
    /// Open (creating) the log under `<state_dir>/tasks/` with the default [`Retention`].
    /// Blocking (it reads the whole retained log): call it before serving, or off the executor.
    pub fn open(state_dir: &Path) -> Result<TaskStore, StoreError> {
        TaskStore::open_with(state_dir, Retention::default())
    }

    /// Open with a given retention: delete segments past it, cut a torn last line, index every
    /// line, and rotate an active segment that is already full.
    pub fn open_with(state_dir: &Path, retention: Retention) -> Result<TaskStore, StoreError> {
        let dir = state_dir.join("tasks");
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { op: "creating", path: dir.clone(), source })?;
        let shared = Shared {
            dir: dir.clone(),
            retention,
            log: Mutex::new(LogState {
                segments: VecDeque::new(),
                pos: 0,
                fresh: 0,
                rotating: false,
                index: HashMap::new(),
            }),
            tasks: Mutex::new(HashMap::new()),
            cached_bytes: AtomicU64::new(0),
            #[cfg(test)]
            lines_read: AtomicU64::new(0),
        };
        // Rotated segments on disk, numbered 1, 2, .. from the newest (a crash mid-rotation may
        // leave a gap: renumbered, so the k-th segment from the active one is `log.<k>.jsonl`);
        // those past the retention are deleted.
        let mut rotated: Vec<usize> = std::fs::read_dir(&dir)
            .map_err(|source| StoreError::Io { op: "listing", path: dir.clone(), source })?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("log.")?.strip_suffix(".jsonl")?.parse::<usize>().ok().filter(|n| *n >= 1)
            })
            .collect();
        rotated.sort_unstable();
        for (i, n) in rotated.iter().enumerate() {
            let (from, to) = (shared.rotated_path(*n), shared.rotated_path(i + 1));
            if i + 1 > retention.keep_rotated {
                std::fs::remove_file(&from).map_err(|source| StoreError::Io {
                    op: "deleting",
                    path: from.clone(),
                    source,
                })?;
            } else if *n != i + 1 {
                rename(&from, &to)?;
            }
        }
        let mut st = shared.log.lock().expect("log lock");
        let mut generation = 0;
        for n in (1..=rotated.len().min(retention.keep_rotated)).rev() {
            let path = shared.rotated_path(n);
            let file = open_segment(&path)?;
            scan_segment(&file, &path, generation, &mut st.index)?;
            st.segments.push_back(Segment { generation, file: Arc::new(file) });
            generation += 1;
        }
        let active = shared.active_path();
        let file = open_segment(&active)?;
        let good = scan_segment(&file, &active, generation, &mut st.index)?;
        let len =
            file.metadata().map_err(|source| StoreError::Io { op: "reading", path: active.clone(), source })?.len();
        if good < len {
            file.set_len(good).map_err(|source| StoreError::Io { op: "repairing", path: active.clone(), source })?;
        }
        st.segments.push_back(Segment { generation, file: Arc::new(file) });
        st.pos = good;
        st.fresh = good;
        let full = good >= retention.segment_bytes;
        st.rotating = full;
        drop(st);
        let shared = Arc::new(shared);
        if full {
            shared.rotate()?;
        }
        Ok(TaskStore { shared })
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
                bytes: 0,
            }),
            seq: watch::channel(0).0,
            shared: self.shared.clone(),
        });
        entry.append(StreamEvent::Task(task))?;
        self.cache(id, &entry, 0);
        Ok(entry)
    }

    /// Put `entry` (`bytes` of log lines not yet counted) in the memory cache, first dropping
    /// the finished tasks nobody holds if the cache is over its limits.
    fn cache(&self, id: &str, entry: &Arc<Entry>, bytes: u64) -> Arc<Entry> {
        let shared = &self.shared;
        let mut map = shared.tasks.lock().expect("task map lock");
        if map.len() >= MAX_CACHED || shared.cached_bytes.load(Ordering::Relaxed) > CACHE_BYTES {
            map.retain(|_, e| {
                let keep = Arc::strong_count(e) > 1 || !e.task_state().is_terminal();
                if !keep {
                    let bytes = e.rec.lock().expect("task lock").bytes;
                    let _ = shared
                        .cached_bytes
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
                }
                keep
            });
        }
        map.entry(id.to_string())
            .or_insert_with(|| {
                shared.cached_bytes.fetch_add(bytes, Ordering::Relaxed);
                entry.clone()
            })
            .clone()
    }

    /// Look a task up in memory, else through the index in the log (read on a blocking thread).
    /// A task found in the log in a non-terminal state belonged to a previous run of this agent:
    /// it is marked failed, since its handler is gone (the lease substrate re-runs swarm work;
    /// A2A clients resend).
    pub async fn get(&self, id: &str) -> Result<Arc<Entry>, StoreError> {
        if protocol::names::check_task_id(id).is_err() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        if let Some(e) = self.shared.tasks.lock().expect("task map lock").get(id) {
            return Ok(e.clone());
        }
        let locs: Vec<(Loc, Arc<File>)> = {
            let st = self.shared.log.lock().expect("log lock");
            let Some(locs) = st.index.get(id) else {
                return Err(StoreError::NotFound(id.to_string()));
            };
            locs.iter()
                .filter_map(|l| st.segments.iter().find(|s| s.generation == l.generation).map(|s| (*l, s.file.clone())))
                .collect()
        };
        let shared = self.shared.clone();
        let owned = id.to_string();
        let bytes = locs.iter().map(|(l, _)| l.len).sum();
        let events = tokio::task::spawn_blocking(move || shared.read_task(&owned, &locs))
            .await
            .expect("reading a task does not panic")?;
        self.load(id, events, bytes)
    }

    /// A task from its replayed events, `bytes` long in the log.
    fn load(&self, id: &str, events: Vec<StreamEvent>, bytes: u64) -> Result<Arc<Entry>, StoreError> {
        let Some(StreamEvent::Task(mut task)) = events.first().cloned() else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        for ev in &events[1..] {
            apply(&mut task, ev);
        }
        let open = !task.status.state.is_terminal();
        let entry = Arc::new(Entry {
            rec: Mutex::new(Record { task, events, open, cancel: None, push: vec![], bytes }),
            seq: watch::channel(0).0,
            shared: self.shared.clone(),
        });
        if open {
            let msg = crate::server::agent_text(
                "interrupted: the agent restarted while this task was running; send the message again",
            );
            entry.status(TaskState::Failed, Some(msg), true)?;
        }
        Ok(self.cache(id, &entry, bytes))
    }

    /// The active log file, for messages.
    pub fn log_path(&self) -> PathBuf {
        self.shared.active_path()
    }

    /// Sizes of the log's segments on disk, oldest first (the active one last).
    pub fn segment_sizes(&self) -> Vec<u64> {
        let st = self.shared.log.lock().expect("log lock");
        st.segments.iter().map(|s| s.file.metadata().map(|m| m.len()).unwrap_or(0)).collect()
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
        let rotate = self.append_locked(&mut rec, event)?;
        drop(rec);
        self.after_append(rotate);
        Ok(())
    }

    /// Returns whether the log is due to rotate: call [`Entry::after_append`] once the task
    /// lock is released.
    fn append_locked(&self, rec: &mut Record, event: StreamEvent) -> Result<bool, StoreError> {
        let seq = rec.events.len() as u64;
        let mut rotate = false;
        if rec.open {
            let mut line = Vec::new();
            serialize_line(&mut line, &rec.task.id, seq, &event);
            rotate = self.shared.append(&rec.task.id, &line, &[0], false)?;
            rec.bytes += line.len() as u64;
        }
        if seq > 0 {
            apply(&mut rec.task, &event);
        }
        rec.events.push(event);
        self.seq.send_replace(seq + 1);
        Ok(rotate)
    }

    fn after_append(&self, rotate: bool) {
        if rotate {
            self.shared.schedule_rotation();
        }
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
        let rotate = self.append_locked(&mut rec, ev)?;
        if state.is_terminal() {
            rec.open = false;
            if let Some(c) = rec.cancel.take() {
                c.send_replace(true);
            }
        }
        drop(rec);
        self.after_append(rotate);
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
        let rotate = self.append_locked(&mut rec, ev)?;
        drop(rec);
        self.after_append(rotate);
        Ok(())
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

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn msg(text: &str) -> Message {
        Message::new(Role::User, "m", vec![Part::text(text)])
    }

    impl TaskStore {
        fn get_now(&self, id: &str) -> Result<Arc<Entry>, StoreError> {
            rt().block_on(self.get(id))
        }

        /// Wait for a rotation in progress to finish.
        fn settle(&self) {
            while self.shared.log.lock().unwrap().rotating {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }

        fn lines_read(&self) -> u64 {
            self.shared.lines_read.load(Ordering::Relaxed)
        }

        fn on_disk(&self) -> (usize, u64) {
            let mut n = 0;
            let mut bytes = 0;
            for e in std::fs::read_dir(&self.shared.dir).unwrap().flatten() {
                n += 1;
                bytes += e.metadata().unwrap().len();
            }
            (n, bytes)
        }
    }

    #[test]
    fn replay_after_restart_and_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        let e = store.create("t1", "c1", msg("hi")).unwrap();
        let p = store.log_path();
        e.status(TaskState::Working, None, false).unwrap();
        let done = store.create("t2", "c1", msg("hi")).unwrap();
        done.status(TaskState::Completed, None, true).unwrap();
        drop((store, e, done));
        // Simulate a crash mid-write: a torn line at the end.
        OpenOptions::new().append(true).open(&p).unwrap().write_all(b"{\"task\":\"t1\",\"seq\":2,\"ev").unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        let t = store.get_now("t1").unwrap().task();
        // Working when the agent died -> failed, with the reason.
        assert_eq!(t.status.state, TaskState::Failed);
        assert!(t.status.message.unwrap().text().contains("restarted"));
        assert_eq!(
            store.get_now("t2").unwrap().task().status.state,
            TaskState::Completed,
            "finished tasks stay as they were"
        );
        // The log stays readable after the repair: a third open sees the same states.
        drop(store);
        let store = TaskStore::open(dir.path()).unwrap();
        assert_eq!(store.get_now("t1").unwrap().task().status.state, TaskState::Failed);
        assert_eq!(store.get_now("t1").unwrap().events_from(0).len(), 3, "task, working, failed");
        assert!(matches!(store.get_now("../t1"), Err(StoreError::NotFound(_))));
        assert!(matches!(store.get_now("nope"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn finished_tasks_leave_memory_and_reload_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        for n in 0..MAX_CACHED * 4 {
            let e = store.create(&format!("t{n}"), "c", msg("hi")).unwrap();
            e.status(TaskState::Working, None, false).unwrap();
            e.status(TaskState::Completed, None, true).unwrap();
        }
        assert!(store.shared.tasks.lock().unwrap().len() <= MAX_CACHED, "finished tasks were evicted");
        assert_eq!(store.lines_read(), 0);
        let t = store.get_now("t0").unwrap();
        assert_eq!(t.task().status.state, TaskState::Completed, "an evicted task reloads from the log, unchanged");
        assert_eq!(t.events_from(0).len(), 3);
        assert_eq!(store.lines_read(), 3, "exactly its own lines are read, not the whole log");
        // An id the log never had is answered from the index alone.
        assert!(matches!(store.get_now("t999999"), Err(StoreError::NotFound(_))));
        assert_eq!(store.lines_read(), 3, "an unknown id reads nothing");
        // Big tasks leave memory by size too.
        let big = "x".repeat(1 << 20);
        for n in 0..12 {
            let e = store.create(&format!("big{n}"), "c", msg(&big)).unwrap();
            e.status(TaskState::Completed, None, true).unwrap();
        }
        assert!(store.shared.cached_bytes.load(Ordering::Relaxed) <= CACHE_BYTES + (2 << 20));
        let cached_big = store.shared.tasks.lock().unwrap().keys().filter(|k| k.starts_with("big")).count();
        assert!(cached_big <= 9, "{cached_big} one-MiB tasks cached");
        assert_eq!(store.get_now("big0").unwrap().task().history[0].text(), big);
    }

    #[test]
    fn the_log_rotates_while_running_and_stays_bounded_and_running_tasks_keep_their_start() {
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention { segment_bytes: 64 << 10, keep_rotated: 2 };
        let store = TaskStore::open_with(dir.path(), retention).unwrap();
        // A task that runs through every rotation below.
        let long = store.create("long", "c", msg("the long one")).unwrap();
        let text = "y".repeat(4000);
        for n in 0..200 {
            let e = store.create(&format!("t{n}"), "c", msg(&text)).unwrap();
            e.status(TaskState::Completed, None, true).unwrap();
            if n % 10 == 0 {
                long.status(TaskState::Working, Some(crate::server::agent_text(&format!("at {n}"))), false).unwrap();
            }
            store.settle();
        }
        // 200 tasks of ~4 KB made ~800 KB of lines: the log kept three segments of ~64 KiB.
        let (files, bytes) = store.on_disk();
        assert_eq!(files, 3, "log.jsonl, log.1.jsonl, log.2.jsonl");
        assert!(bytes <= 3 * ((64 << 10) + 8192) + 4096, "{bytes} bytes on disk");
        assert_eq!(store.segment_sizes().len(), 3);
        // Old finished tasks are gone for good, recent ones answer.
        assert!(matches!(store.get_now("t0"), Err(StoreError::NotFound(_))));
        assert_eq!(store.get_now("t199").unwrap().task().status.state, TaskState::Completed);
        // The running task kept all its events through the rotations, on disk too.
        long.status(TaskState::Completed, None, true).unwrap();
        let events = long.events_from(0).len();
        drop(long);
        let index_len = store.shared.log.lock().unwrap().index.len();
        assert!(index_len < 100, "the index forgets rotated-away tasks: {index_len}");
        drop(store);
        // Restart: the index is rebuilt from the three segments.
        let store = TaskStore::open_with(dir.path(), retention).unwrap();
        let t = store.get_now("long").unwrap();
        assert_eq!(t.events_from(0).len(), events, "every event of the long task, from its first");
        assert_eq!(t.task().status.state, TaskState::Completed);
        assert_eq!(t.task().history[0].text(), "the long one");
        assert!(matches!(store.get_now("t0"), Err(StoreError::NotFound(_))));
        assert_eq!(store.get_now("t199").unwrap().task().status.state, TaskState::Completed);
    }

    #[test]
    fn open_deletes_segments_past_the_retention_and_closes_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = dir.path().join("tasks");
        std::fs::create_dir_all(&tasks).unwrap();
        let line = |id: &str| {
            let mut out = Vec::new();
            let t = StreamEvent::Task(Task {
                id: id.into(),
                context_id: "c".into(),
                status: TaskStatus { state: TaskState::Completed, message: None, timestamp: None },
                history: vec![],
                artifacts: vec![],
                metadata: None,
                kind: Default::default(),
            });
            serialize_line(&mut out, id, 0, &t);
            out
        };
        // A crash mid-rotation left log.2 and log.5 (no log.1), and a full log.jsonl.
        std::fs::write(tasks.join("log.2.jsonl"), line("a")).unwrap();
        std::fs::write(tasks.join("log.5.jsonl"), line("b")).unwrap();
        std::fs::write(tasks.join("log.9.jsonl"), line("c")).unwrap();
        std::fs::write(tasks.join("log.jsonl"), line("d")).unwrap();
        let store = TaskStore::open_with(dir.path(), Retention { segment_bytes: 1 << 20, keep_rotated: 2 }).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(&tasks).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["log.1.jsonl", "log.2.jsonl", "log.jsonl"]);
        for id in ["a", "b", "d"] {
            assert_eq!(store.get_now(id).unwrap().task().id, id);
        }
        assert!(matches!(store.get_now("c"), Err(StoreError::NotFound(_))), "past the retention");
    }
}
