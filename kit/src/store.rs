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
//! **Crash safety.** Lines are only appended, one `write` per append (a task that ends at once,
//! [`TaskStore::create_ended`], writes its two lines in one); a torn last line (a crash
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

use protocol::json::{self, WriteJson};
use protocol::{
    Artifact, ArtifactUpdateKind, Message, PushNotificationConfig, StatusUpdateKind, StreamEvent, Task,
    TaskArtifactUpdateEvent, TaskState, TaskStatus, TaskStatusUpdateEvent,
};
use serde::Deserialize;
use tokio::sync::{oneshot, watch};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task {0} not found")]
    NotFound(String),
    #[error("{op} task log {path}: {source}; check that the state directory is writable")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("page token {0:?} is not one this agent issued; use the nextPageToken of the previous page, or none")]
    BadCursor(String),
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

/// The line of event `seq` of task `id`, written by `event` (a [`LogLine`] serialized, through
/// [`protocol::json`]: the event's JSON is serde_json's, byte for byte, at a fraction of the cost).
fn write_line(out: &mut Vec<u8>, id: &str, seq: u64, event: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"{\"task\":");
    json::write_str(out, id);
    out.extend_from_slice(b",\"seq\":");
    json::write_u64(out, seq);
    out.extend_from_slice(b",\"event\":");
    event(out);
    out.extend_from_slice(b"}\n");
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

/// What the index knows of one task: where its lines are, and enough to list it.
#[derive(Debug, Default)]
struct Indexed {
    locs: Vec<Loc>,
    /// The highest `seq` seen of this task, and where its line is: the task's place in the
    /// "most recently updated" order of ListTasks (a line copied by rotation repeats an old
    /// `seq`, so it does not move the task).
    max_seq: Option<u64>,
    order: (u64, u64),
    /// From the task's first line (the task as submitted).
    context: Option<String>,
    /// State and status timestamp after its last line, when known (every append sets it; a task
    /// only scanned at open gets it when it is first read).
    status: Option<(TaskState, Option<String>)>,
}

/// What a fresh line tells the index about its task.
struct Fresh<'a> {
    seq: u64,
    context: &'a str,
    state: TaskState,
    timestamp: Option<&'a str>,
}

/// A task as ListTasks sees it before reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub id: String,
    pub context: String,
    pub state: TaskState,
    pub timestamp: Option<String>,
    order: (u64, u64),
}

impl Listed {
    /// The opaque cursor of this position in the listing (`pageToken`).
    pub fn cursor(&self) -> String {
        format!("{}.{}", self.order.0, self.order.1)
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub context: Option<String>,
    pub state: Option<TaskState>,
    /// Only tasks whose status timestamp is at or after this time.
    pub updated_since: Option<std::time::SystemTime>,
    /// Only tasks after this cursor (a previous page's `nextPageToken`).
    pub after: Option<String>,
    pub limit: usize,
}

/// One page of a listing: the tasks (most recently updated first), how many match in all, and
/// the cursor of the next page (none on the last).
#[derive(Debug, Clone)]
pub struct ListPage {
    pub tasks: Vec<Listed>,
    pub total: usize,
    pub next: Option<String>,
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
    index: HashMap<String, Indexed>,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments.back().expect("there is always an active segment")
    }
}

/// The tasks in memory: every running task, and finished ones up to [`MAX_CACHED`] and
/// [`CACHE_BYTES`].
#[derive(Default)]
struct Cached {
    map: HashMap<String, Arc<Entry>>,
    /// The ids in `map`, in the order they came in: the oldest finished task nobody holds goes
    /// first when the cache is over its limits, one for each that comes in. (Dropping every
    /// finished task at once when the limit was reached freed a few thousand allocations in one
    /// go, more than glibc's per-thread cache takes, and the requests that followed paid for it
    /// in the allocator's slower paths: 1.6K instructions a send in `malloc_consolidate` alone.)
    order: VecDeque<String>,
}

/// What the store and every entry share.
struct Shared {
    dir: PathBuf,
    retention: Retention,
    log: Mutex<LogState>,
    tasks: Mutex<Cached>,
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
    /// A fresh line (not `carried` by a rotation) carries the task's `seq` and its status after
    /// it, for listing. Returns whether the active segment is due to rotate (the caller starts it
    /// once it holds no task lock).
    fn append(
        &self,
        id: &str,
        lines: &[u8],
        starts: &[usize],
        carried: bool,
        fresh: Option<Fresh<'_>>,
    ) -> Result<bool, StoreError> {
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
        let entry = match st.index.get_mut(id) {
            Some(e) => e,
            None => st
                .index
                .entry(id.to_string())
                .or_insert_with(|| Indexed { locs: Vec::with_capacity(starts.len().max(2)), ..Default::default() }),
        };
        for (i, start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(lines.len());
            entry.locs.push(Loc { generation, offset: base + *start as u64, len: (end - start) as u64 });
        }
        if let Some(f) = fresh {
            if entry.max_seq.is_none_or(|m| f.seq > m) {
                entry.max_seq = Some(f.seq);
                entry.order = (generation, base);
            }
            if entry.context.is_none() {
                entry.context = Some(f.context.to_string());
            }
            entry.status = Some((f.state, f.timestamp.map(String::from)));
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
            st.index.retain(|_, e| {
                e.locs.retain(|l| l.generation >= oldest);
                !e.locs.is_empty()
            });
        }
        // Unlinking a large file can take a while: outside the lock. Already gone is fine.
        match std::fs::remove_file(&doomed) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::Io { op: "deleting", path: doomed, source: e });
            }
            _ => {}
        }
        let running: Vec<Arc<Entry>> = self.tasks.lock().expect("task map lock").map.values().cloned().collect();
        for entry in running {
            let rec = entry.rec.lock().expect("task lock");
            if !rec.open {
                continue;
            }
            let mut lines = Vec::new();
            let events = rec.events.from(&rec.task, 0);
            let mut starts = Vec::with_capacity(events.len());
            for (seq, event) in events.iter().enumerate() {
                starts.push(lines.len());
                serialize_line(&mut lines, &rec.task.id, seq as u64, event);
            }
            if !lines.is_empty() {
                self.append(&rec.task.id, &lines, &starts, true, None)?;
            }
        }
        Ok(())
    }

    /// Record what a replay found of task `id` (its context and status), for listing.
    fn note(&self, id: &str, task: &Task) {
        let mut st = self.log.lock().expect("log lock");
        if let Some(e) = st.index.get_mut(id) {
            e.context.get_or_insert_with(|| task.context_id.clone());
            e.status = Some((task.status.state, task.status.timestamp.clone()));
        }
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

fn parse_cursor(c: &str) -> Option<(u64, u64)> {
    let (g, o) = c.split_once('.')?;
    Some((g.parse().ok()?, o.parse().ok()?))
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
    write_line(out, id, seq, |out| event.write_json(out));
}

/// What the index reads of a log line: its task id, its `seq`, and for a task's first line its
/// context id.
#[derive(Debug, PartialEq, Eq)]
struct LineHead {
    task: String,
    seq: Option<u64>,
    context: Option<String>,
}

/// Read a line's head from the prefix the store writes
/// (`{"task":"<id>","seq":<n>,"event":{"id":"<id>","contextId":"<ctx>"` for the first line of a
/// task), else by parsing the line.
fn line_head(line: &[u8]) -> Option<LineHead> {
    /// The string after `prefix` at the start of `rest`, up to its closing quote (no escapes).
    fn string_after<'a>(rest: &'a [u8], prefix: &[u8]) -> Option<(&'a str, &'a [u8])> {
        let rest = rest.strip_prefix(prefix)?;
        let end = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
        (rest[end] == b'"').then_some(())?;
        Some((std::str::from_utf8(&rest[..end]).ok()?, &rest[end + 1..]))
    }
    if let Some((task, rest)) = string_after(line, b"{\"task\":\"")
        && let Some(rest) = rest.strip_prefix(b",\"seq\":")
    {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let seq = std::str::from_utf8(&rest[..digits]).ok().and_then(|d| d.parse().ok());
        let context = (seq == Some(0))
            .then(|| {
                let (_, rest) = string_after(&rest[digits..], b",\"event\":{\"id\":\"")?;
                string_after(rest, b",\"contextId\":\"").map(|(c, _)| c.to_string())
            })
            .flatten();
        return Some(LineHead { task: task.to_string(), seq, context });
    }
    #[derive(Deserialize)]
    struct Head {
        task: String,
        seq: Option<u64>,
    }
    serde_json::from_slice::<Head>(line).ok().map(|h| LineHead { task: h.task, seq: h.seq, context: None })
}

/// Index one segment: every complete line's location under its task id. Returns the offset past
/// the last complete line.
fn scan_segment(
    file: &File,
    path: &Path,
    generation: u64,
    index: &mut HashMap<String, Indexed>,
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
        if let Some(head) = line_head(&line) {
            let e = index.entry(head.task).or_default();
            e.locs.push(Loc { generation, offset, len: n as u64 });
            if let Some(seq) = head.seq
                && e.max_seq.is_none_or(|m| seq > m)
            {
                e.max_seq = Some(seq);
                e.order = (generation, offset);
                e.status = None;
            }
            if e.context.is_none() {
                e.context = head.context;
            }
        }
        offset += n as u64;
    }
}

struct Record {
    task: Task,
    events: Events,
    /// Whether more events may be written (false once terminal).
    open: bool,
    cancel: Option<watch::Sender<bool>>,
    push: Vec<PushTarget>,
    /// Bytes of this task's log lines.
    bytes: u64,
    /// Who waits for the client's next message while the task is `input-required`.
    awaiting: Option<Awaiting>,
    /// Follow-up messages taken so far.
    turns: u32,
}

/// A task's events (what a stream of it replays, numbered from 0).
enum Events {
    /// Kept as they were appended (or read back from the log).
    Kept(Vec<StreamEvent>),
    /// A task that ended when it was created ([`TaskStore::create_ended`]): its two events (the
    /// task as submitted, then its final status) are exactly what its log lines say, and are
    /// derived from the task when a stream asks, instead of being kept as a second copy of its
    /// messages (which a send that ends at once would make and drop for nothing). Its log lines
    /// are kept, with where its status and messages are in them: the task's 0.3 JSON (a 0.3
    /// send's answer) is spliced from them instead of being written a second time. Its end's
    /// message is held once, in the task's status: the task's history holds the first message
    /// only, and the end's message is its last entry wherever the task is read ([`Record::whole`],
    /// [`Record::task_mut`]), as applying the end as an event would have made it.
    EndedAtCreation(Written),
}

/// The log lines of a task that ended when it was created, and where in them the JSON of its
/// status, its first message and its end's message are.
struct Written {
    lines: Vec<u8>,
    status: std::ops::Range<usize>,
    first: std::ops::Range<usize>,
    end: Option<std::ops::Range<usize>>,
}

impl Events {
    fn len(&self) -> usize {
        match self {
            Events::Kept(v) => v.len(),
            Events::EndedAtCreation(_) => 2,
        }
    }

    /// The events from index `from` on.
    fn from(&self, task: &Task, from: usize) -> Vec<StreamEvent> {
        match self {
            Events::Kept(v) => v.get(from..).map(<[_]>::to_vec).unwrap_or_default(),
            Events::EndedAtCreation(_) => ended_at_creation(task).into_iter().skip(from).collect(),
        }
    }
}

impl Record {
    /// A copy of the task, whole (see [`Events::EndedAtCreation`]).
    fn whole(&self) -> Task {
        let mut task = self.task.clone();
        if let (Events::EndedAtCreation(_), Some(end)) = (&self.events, &self.task.status.message) {
            task.history.push(end.clone());
        }
        task
    }

    /// The task, whole, to change or to lend out: a task that ended when it was created is made
    /// an ordinary one first (its events kept, its end's message in its history too).
    fn task_mut(&mut self) -> &mut Task {
        if let Events::EndedAtCreation(_) = &self.events {
            self.events = Events::Kept(ended_at_creation(&self.task).into());
            if let Some(end) = &self.task.status.message {
                let end = end.clone();
                self.task.history.push(end);
            }
        }
        &mut self.task
    }

    /// The events kept in memory, derived ones made real (before another is added).
    fn kept(&mut self) -> &mut Vec<StreamEvent> {
        self.task_mut();
        match &mut self.events {
            Events::Kept(v) => v,
            Events::EndedAtCreation(_) => unreachable!("made real by task_mut"),
        }
    }
}

/// The two events of a task that ended when it was created (as [`Record`] holds it: its first
/// message in its history, its end's in its status): the task as submitted (its first message,
/// at the time it ended) and its final status.
fn ended_at_creation(task: &Task) -> [StreamEvent; 2] {
    let submitted = Task {
        id: task.id.clone(),
        context_id: task.context_id.clone(),
        status: TaskStatus { state: TaskState::Submitted, message: None, timestamp: task.status.timestamp.clone() },
        history: task.history.first().cloned().into_iter().collect(),
        artifacts: vec![],
        metadata: None,
        kind: Default::default(),
    };
    let end = TaskStatusUpdateEvent {
        task_id: task.id.clone(),
        context_id: task.context_id.clone(),
        kind: StatusUpdateKind::Tag,
        status: task.status.clone(),
        is_final: true,
        metadata: None,
    };
    [StreamEvent::Task(submitted), StreamEvent::Status(end)]
}

/// A push notification config, and the protocol generation whose payloads it gets.
#[derive(Debug, Clone, PartialEq)]
pub struct PushTarget {
    pub config: PushNotificationConfig,
    pub v1: bool,
}

/// Who waits for the next message of an `input-required` task.
#[derive(Debug)]
enum Awaiting {
    /// A running skill (`TaskCtx::ask`).
    Skill(oneshot::Sender<Message>),
    /// The agent itself, asking which skill to run.
    Intake,
}

/// Follow-up messages a task takes at most (each adds lines to its log record, which
/// rotation carries while the task runs).
pub const MAX_TURNS: u32 = 64;

/// What a follow-up message did.
#[derive(Debug)]
pub enum FollowUp {
    /// Handed to the skill that asked for it.
    Delivered,
    /// The task waits on the agent's question which skill to run: the caller decides.
    Intake(Message),
}

/// Why a follow-up message was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The task is over (A2A 1.0 §3.1.1: messages to terminal tasks are refused).
    Terminal(TaskState),
    /// The task runs and asked for nothing.
    NotWaiting(TaskState),
    TooManyTurns,
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
            tasks: Mutex::new(Cached::default()),
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
    pub fn create(&self, id: &str, context_id: &str, message: Message) -> Result<Arc<Entry>, StoreError> {
        self.create_with(id, context_id, message, None)
    }

    /// Create a task for `message` that ends at once in `state` (terminal or interrupted) with
    /// `end` as its status message: its two lines (submitted, then the end) go to the log in
    /// one `write`.
    pub fn create_ended(
        &self,
        id: &str,
        context_id: &str,
        message: Message,
        state: TaskState,
        end: Option<Message>,
    ) -> Result<Arc<Entry>, StoreError> {
        self.create_with(id, context_id, message, Some((state, end)))
    }

    fn create_with(
        &self,
        id: &str,
        context_id: &str,
        mut message: Message,
        end: Option<(TaskState, Option<Message>)>,
    ) -> Result<Arc<Entry>, StoreError> {
        message.task_id = Some(id.to_string());
        message.context_id = Some(context_id.to_string());
        let stamp = now();
        let end = match end {
            Some((state, end)) if state.is_terminal() => {
                return self.create_terminal(id, context_id, message, state, end, stamp);
            }
            other => other,
        };
        let task = Task {
            id: id.to_string(),
            context_id: context_id.to_string(),
            status: TaskStatus { state: TaskState::Submitted, message: None, timestamp: Some(stamp.clone()) },
            history: vec![message],
            artifacts: vec![],
            metadata: None,
            kind: Default::default(),
        };
        let (cancel_tx, _) = watch::channel(false);
        let entry = Arc::new(Entry {
            rec: Mutex::new(Record {
                task: task.clone(),
                events: Events::Kept(vec![]),
                open: true,
                cancel: Some(cancel_tx),
                push: vec![],
                bytes: 0,
                awaiting: None,
                turns: 0,
            }),
            seq: watch::channel(0).0,
            shared: self.shared.clone(),
        });
        match end {
            None => entry.append(StreamEvent::Task(task))?,
            Some((state, message)) => {
                let mut rec = entry.rec.lock().expect("task lock");
                let ended = status_event(&rec.task, state, message, true, stamp);
                let rotate = entry.append_locked(&mut rec, [StreamEvent::Task(task), ended])?;
                Entry::ended(&mut rec, state);
                drop(rec);
                entry.after_append(rotate);
            }
        }
        self.cache(id, &entry, 0);
        Ok(entry)
    }

    /// [`TaskStore::create_ended`] in a terminal `state`: the task is built once, in its final
    /// form; its two lines are serialized from it (the submitted task before the end is added,
    /// the end borrowed from its status), and its events are derived from it when asked
    /// ([`Events::EndedAtCreation`]).
    fn create_terminal(
        &self,
        id: &str,
        context_id: &str,
        message: Message,
        state: TaskState,
        end: Option<Message>,
        stamp: String,
    ) -> Result<Arc<Entry>, StoreError> {
        let mut task = Task {
            id: id.to_string(),
            context_id: context_id.to_string(),
            status: TaskStatus { state: TaskState::Submitted, message: None, timestamp: Some(stamp) },
            history: vec![message],
            artifacts: vec![],
            metadata: None,
            kind: Default::default(),
        };
        let end = end.map(|mut m| {
            m.task_id = Some(task.id.clone());
            m.context_id = Some(task.context_id.clone());
            m
        });
        // Written in the scratch buffer, appended from it, then kept in a copy of their size
        // (see `server::sized`).
        let (lines, first, status, end, rotate) = crate::server::with_scratch(|lines| {
            let mut first = None;
            write_line(lines, id, 0, |out| first = json::write_task(out, &task));
            let first = first.expect("the task has its first message");
            let second = lines.len();
            task.status.state = state;
            task.status.message = end;
            let mut spans = None;
            write_line(lines, id, 1, |out| {
                spans = Some(json::write_status_update(out, &task.id, &task.context_id, &task.status, true));
            });
            let (status, end) = spans.expect("the line was written");
            let fresh = Fresh { seq: 1, context: context_id, state, timestamp: task.status.timestamp.as_deref() };
            let rotate = self.shared.append(id, lines, &[0, second], false, Some(fresh))?;
            Ok::<_, StoreError>((lines.to_vec(), first, status, end, rotate))
        })?;
        // The end's message stays in the status alone (see `Events::EndedAtCreation`).
        let entry = Arc::new(Entry {
            rec: Mutex::new(Record {
                task,
                bytes: lines.len() as u64,
                events: Events::EndedAtCreation(Written { lines, status, first, end }),
                open: false,
                cancel: None,
                push: vec![],
                awaiting: None,
                turns: 0,
            }),
            seq: watch::channel(2).0,
            shared: self.shared.clone(),
        });
        entry.after_append(rotate);
        self.cache(id, &entry, 0);
        Ok(entry)
    }

    /// Put `entry` (`bytes` of log lines not yet counted) in the memory cache, first dropping
    /// the oldest finished tasks nobody holds while the cache is over its limits.
    fn cache(&self, id: &str, entry: &Arc<Entry>, bytes: u64) -> Arc<Entry> {
        let shared = &self.shared;
        let mut cached = shared.tasks.lock().expect("task map lock");
        let Cached { map, order } = &mut *cached;
        // Tasks that must stay (running, or held) go to the back; a whole round of those ends it.
        let mut kept = 0;
        while (map.len() >= MAX_CACHED || shared.cached_bytes.load(Ordering::Relaxed) > CACHE_BYTES)
            && kept < order.len()
        {
            let Some(old) = order.pop_front() else { break };
            let Some(e) = map.get(&old) else { continue };
            if Arc::strong_count(e) > 1 || !e.task_state().is_terminal() {
                order.push_back(old);
                kept += 1;
                continue;
            }
            let e = map.remove(&old).expect("looked up above");
            let bytes = e.rec.lock().expect("task lock").bytes;
            let _ = shared
                .cached_bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
        }
        match map.entry(id.to_string()) {
            std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
            std::collections::hash_map::Entry::Vacant(v) => {
                shared.cached_bytes.fetch_add(bytes, Ordering::Relaxed);
                order.push_back(id.to_string());
                v.insert(entry.clone()).clone()
            }
        }
    }

    /// Look a task up in memory, else through the index in the log (read on a blocking thread).
    /// A task found in the log in a non-terminal state belonged to a previous run of this agent:
    /// it is marked failed, since its handler is gone (the lease substrate re-runs swarm work;
    /// A2A clients resend).
    pub async fn get(&self, id: &str) -> Result<Arc<Entry>, StoreError> {
        if protocol::names::check_task_id(id).is_err() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        if let Some(e) = self.shared.tasks.lock().expect("task map lock").map.get(id) {
            return Ok(e.clone());
        }
        let locs: Vec<(Loc, Arc<File>)> = {
            let st = self.shared.log.lock().expect("log lock");
            let Some(indexed) = st.index.get(id) else {
                return Err(StoreError::NotFound(id.to_string()));
            };
            indexed
                .locs
                .iter()
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
        if !open {
            self.shared.note(id, &task);
        }
        let entry = Arc::new(Entry {
            rec: Mutex::new(Record {
                task,
                events: Events::Kept(events),
                open,
                cancel: None,
                push: vec![],
                bytes,
                awaiting: None,
                turns: 0,
            }),
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

    /// List tasks, most recently updated first (A2A 1.0 §3.1.4: "sorted by last update time in
    /// descending order", cursor-based pagination). A task the index has only scanned (from
    /// before a restart) is read once to learn its state; every later append keeps the index
    /// current. Blocking file reads run off the executor.
    pub async fn list(&self, filter: &ListFilter) -> Result<ListPage, StoreError> {
        let after = match &filter.after {
            None => None,
            Some(c) => Some(parse_cursor(c).ok_or_else(|| StoreError::BadCursor(c.clone()))?),
        };
        // What the index knows; tasks with an unknown status or context are read first.
        let unknown: Vec<String> = {
            let st = self.shared.log.lock().expect("log lock");
            st.index
                .iter()
                .filter(|(_, e)| match (&e.context, &filter.context) {
                    (None, _) => true,
                    (Some(c), Some(want)) => c == want && e.status.is_none(),
                    (Some(_), None) => e.status.is_none(),
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in unknown {
            // Reading marks a task of a previous run that never finished as failed, as a
            // lookup does; one whose lines rotated away is simply not listed.
            if let Ok(entry) = self.get(&id).await {
                self.shared.note(&id, &entry.task());
            }
        }
        let mut all: Vec<Listed> = {
            let st = self.shared.log.lock().expect("log lock");
            st.index
                .iter()
                .filter_map(|(id, e)| {
                    let (state, timestamp) = e.status.clone()?;
                    Some(Listed { id: id.clone(), context: e.context.clone()?, state, timestamp, order: e.order })
                })
                .filter(|t| filter.context.as_ref().is_none_or(|c| &t.context == c))
                .filter(|t| filter.state.is_none_or(|s| t.state == s))
                .filter(|t| {
                    filter.updated_since.is_none_or(|since| {
                        t.timestamp
                            .as_deref()
                            .and_then(|ts| humantime::parse_rfc3339_weak(ts).ok())
                            .is_some_and(|ts| ts >= since)
                    })
                })
                .collect()
        };
        all.sort_by_key(|t| std::cmp::Reverse(t.order));
        let total = all.len();
        let start = after.map_or(0, |cursor| all.partition_point(|t| t.order >= cursor));
        let limit = filter.limit.max(1);
        let tasks: Vec<Listed> = all.into_iter().skip(start).take(limit).collect();
        let next = (start + tasks.len() < total).then(|| tasks.last().map(Listed::cursor)).flatten();
        Ok(ListPage { tasks, total, next })
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
/// A status update of `task`: `state`, with `message` (given the task's ids) at `timestamp`.
fn status_event(
    task: &Task,
    state: TaskState,
    message: Option<Message>,
    is_final: bool,
    timestamp: String,
) -> StreamEvent {
    let mut message = message;
    if let Some(m) = message.as_mut() {
        m.task_id = Some(task.id.clone());
        m.context_id = Some(task.context_id.clone());
    }
    StreamEvent::Status(TaskStatusUpdateEvent {
        task_id: task.id.clone(),
        context_id: task.context_id.clone(),
        kind: StatusUpdateKind::Tag,
        status: TaskStatus { state, message, timestamp: Some(timestamp) },
        is_final,
        metadata: None,
    })
}

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
        self.rec.lock().expect("task lock").whole()
    }

    /// The task's JSON (0.3), as [`protocol::json`] writes it: for a task that ended when it was
    /// created, spliced from its log lines (no serialization).
    pub fn task_json(&self) -> Vec<u8> {
        crate::server::sized(|out| self.write_task_json(out))
    }

    /// [`Entry::task_json`], written at the end of `out`.
    pub fn write_task_json(&self, out: &mut Vec<u8>) {
        let rec = self.rec.lock().expect("task lock");
        let t = &rec.task;
        match &rec.events {
            Events::EndedAtCreation(w) if t.artifacts.is_empty() && t.metadata.is_none() => {
                let first = &w.lines[w.first.clone()];
                let status = &w.lines[w.status.clone()];
                match &w.end {
                    Some(end) => {
                        json::write_task_from_parts(out, &t.id, &t.context_id, status, &[first, &w.lines[end.clone()]])
                    }
                    None => json::write_task_from_parts(out, &t.id, &t.context_id, status, &[first]),
                }
            }
            // Ended at once with artefacts or metadata (never so far): the whole task, copied.
            Events::EndedAtCreation(_) => rec.whole().write_json(out),
            Events::Kept(_) => t.write_json(out),
        }
    }

    /// The task's 1.0 JSON (`AsV1`) as `{"task": ...}` (a `SendMessageResponse`), written straight
    /// from it: for a task that ended when it was created, its end's message (held in its status
    /// alone) written once and copied as its last history entry.
    pub fn send_response_v1(&self, out: &mut Vec<u8>) {
        let rec = self.rec.lock().expect("task lock");
        let end_in_status_only = matches!(rec.events, Events::EndedAtCreation(_));
        out.extend_from_slice(br#"{"task":"#);
        json::write_task_v1(out, &rec.task, end_in_status_only);
        out.push(b'}');
    }

    /// Run `f` on the task as it is, under its lock (to serialize it without a copy).
    pub fn with_task<R>(&self, f: impl FnOnce(&Task) -> R) -> R {
        f(self.rec.lock().expect("task lock").task_mut())
    }

    /// The task's id.
    pub fn id(&self) -> String {
        self.rec.lock().expect("task lock").task.id.clone()
    }

    /// Events from index `from` on, and whether the log is closed (a final event is in it).
    pub fn events_from(&self, from: usize) -> Vec<StreamEvent> {
        let rec = self.rec.lock().expect("task lock");
        rec.events.from(&rec.task, from)
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
        let rotate = self.append_locked(&mut rec, [event])?;
        drop(rec);
        self.after_append(rotate);
        Ok(())
    }

    /// Append `events` (their lines in one `write`), apply them to the task and publish them.
    /// Returns whether the log is due to rotate: call [`Entry::after_append`] once the task
    /// lock is released.
    fn append_locked<const N: usize>(&self, rec: &mut Record, events: [StreamEvent; N]) -> Result<bool, StoreError> {
        let first = rec.events.len() as u64;
        let mut rotate = false;
        if rec.open
            && let Some(last) = events.last()
        {
            let status = match last {
                StreamEvent::Status(s) => &s.status,
                StreamEvent::Task(t) => &t.status,
                _ => &rec.task.status,
            };
            let fresh = Fresh {
                seq: first + N as u64 - 1,
                context: &rec.task.context_id,
                state: status.state,
                timestamp: status.timestamp.as_deref(),
            };
            // The lines are written, appended and dropped: in the scratch buffer.
            let written = crate::server::with_scratch(|lines| {
                let mut starts = [0; N];
                for (i, event) in events.iter().enumerate() {
                    starts[i] = lines.len();
                    serialize_line(lines, &rec.task.id, first + i as u64, event);
                }
                let rotate = self.shared.append(&rec.task.id, lines, &starts, false, Some(fresh))?;
                Ok::<_, StoreError>((rotate, lines.len() as u64))
            })?;
            rotate = written.0;
            rec.bytes += written.1;
        }
        for event in events {
            if rec.events.len() > 0 {
                apply(rec.task_mut(), &event);
            }
            rec.kept().push(event);
        }
        self.seq.send_replace(rec.events.len() as u64);
        Ok(rotate)
    }

    /// After a status in `state` was appended: a terminal task takes no more events and its
    /// skill is told to stop.
    fn ended(rec: &mut Record, state: TaskState) {
        if state != TaskState::InputRequired {
            rec.awaiting = None;
        }
        if state.is_terminal() {
            rec.open = false;
            if let Some(c) = rec.cancel.take() {
                c.send_replace(true);
            }
        }
    }

    fn after_append(&self, rotate: bool) {
        if rotate {
            self.shared.schedule_rotation();
        }
    }

    /// Record a status change. Returns false (and writes nothing) if the task is already terminal.
    pub fn status(&self, state: TaskState, message: Option<Message>, is_final: bool) -> Result<bool, StoreError> {
        let mut rec = self.rec.lock().expect("task lock");
        let (changed, rotate) = self.status_locked(&mut rec, state, message, is_final)?;
        drop(rec);
        self.after_append(rotate);
        Ok(changed)
    }

    /// Record `input-required` with `question` (a final event: the exchange waits for the
    /// client) and return where the client's next message will arrive. None if the task is
    /// already over.
    pub fn ask(&self, question: Message) -> Result<Option<oneshot::Receiver<Message>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        Ok(self.wait_for_input(question, Awaiting::Skill(tx))?.then_some(rx))
    }

    /// Record `input-required` with the agent's question which skill to run; the next message
    /// comes back to the caller of [`Entry::follow_up`] as [`FollowUp::Intake`].
    pub fn ask_intake(&self, question: Message) -> Result<bool, StoreError> {
        self.wait_for_input(question, Awaiting::Intake)
    }

    fn wait_for_input(&self, question: Message, awaiting: Awaiting) -> Result<bool, StoreError> {
        let mut rec = self.rec.lock().expect("task lock");
        let (changed, rotate) = self.status_locked(&mut rec, TaskState::InputRequired, Some(question), true)?;
        if changed {
            rec.awaiting = Some(awaiting);
        }
        drop(rec);
        self.after_append(rotate);
        Ok(changed)
    }

    /// A follow-up message from the client (A2A 1.0 §3.4.3): taken when the task is
    /// `input-required`, recorded in the task (a `working` status carrying the message, so it is
    /// in the history and every stream sees the task resume) and handed to whoever asked.
    pub fn follow_up(&self, message: Message) -> Result<Result<FollowUp, Refused>, StoreError> {
        let mut rec = self.rec.lock().expect("task lock");
        let state = rec.task.status.state;
        if state.is_terminal() {
            return Ok(Err(Refused::Terminal(state)));
        }
        if state != TaskState::InputRequired || rec.awaiting.is_none() {
            return Ok(Err(Refused::NotWaiting(state)));
        }
        if rec.turns >= MAX_TURNS {
            return Ok(Err(Refused::TooManyTurns));
        }
        rec.turns += 1;
        let awaiting = rec.awaiting.take();
        let (_, rotate) = self.status_locked(&mut rec, TaskState::Working, Some(message.clone()), false)?;
        drop(rec);
        self.after_append(rotate);
        // The stored copy carries the task's ids; so does the one the skill gets.
        let mut message = message;
        let rec = self.rec.lock().expect("task lock");
        message.task_id = Some(rec.task.id.clone());
        message.context_id = Some(rec.task.context_id.clone());
        drop(rec);
        Ok(Ok(match awaiting {
            Some(Awaiting::Skill(tx)) => {
                // A skill that stopped waiting has ended, and with it the task.
                let _ = tx.send(message);
                FollowUp::Delivered
            }
            Some(Awaiting::Intake) | None => FollowUp::Intake(message),
        }))
    }

    /// Under the task lock: write the status event unless the task is terminal. Returns
    /// whether it changed anything and whether the log is due to rotate.
    fn status_locked(
        &self,
        rec: &mut Record,
        state: TaskState,
        message: Option<Message>,
        is_final: bool,
    ) -> Result<(bool, bool), StoreError> {
        if rec.task.status.state.is_terminal() {
            return Ok((false, false));
        }
        let ev = status_event(&rec.task, state, message, is_final, now());
        let rotate = self.append_locked(rec, [ev])?;
        Entry::ended(rec, state);
        Ok((true, rotate))
    }

    /// Publish an artefact; `append` adds its parts to the one with its id (else it replaces
    /// it), `last` marks the last piece.
    pub fn artifact(&self, artifact: Artifact, append: bool, last: bool) -> Result<(), StoreError> {
        let mut rec = self.rec.lock().expect("task lock");
        if rec.task.status.state.is_terminal() {
            return Ok(());
        }
        let ev = StreamEvent::Artifact(TaskArtifactUpdateEvent {
            task_id: rec.task.id.clone(),
            context_id: rec.task.context_id.clone(),
            kind: ArtifactUpdateKind::Tag,
            artifact,
            append: append.then_some(true),
            last_chunk: Some(last),
            metadata: None,
        });
        let rotate = self.append_locked(&mut rec, [ev])?;
        drop(rec);
        self.after_append(rotate);
        Ok(())
    }

    pub fn push_configs(&self) -> Vec<PushTarget> {
        self.rec.lock().expect("task lock").push.clone()
    }

    /// Add (or replace, by id) a push config; returns whether the task had none before.
    pub fn set_push(&self, target: PushTarget) -> bool {
        let mut rec = self.rec.lock().expect("task lock");
        let first = rec.push.is_empty();
        rec.push.retain(|c| c.config.id != target.config.id);
        rec.push.push(target);
        first
    }

    pub fn delete_push(&self, id: &str) -> bool {
        let mut rec = self.rec.lock().expect("task lock");
        let before = rec.push.len();
        rec.push.retain(|c| c.config.id.as_deref() != Some(id));
        before != rec.push.len()
    }

    /// The task as it is, and the number of its events so far (taken together, so a stream
    /// that starts with this snapshot continues at exactly the next event).
    pub fn snapshot(&self) -> (Task, usize) {
        let rec = self.rec.lock().expect("task lock");
        (rec.whole(), rec.events.len())
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

    /// A task that ends at once: its two lines (submitted, the end) in one append, the same
    /// task and events as created-then-ended, after a restart too, and listed in its end state.
    #[test]
    fn a_task_created_ended_is_two_lines_of_one_append() {
        let dir = tempfile::tempdir().unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        let answer = Message::new(Role::Agent, "a", vec![Part::text("up")]);
        let e = store.create_ended("t1", "c1", msg("status"), TaskState::Completed, Some(answer)).unwrap();
        let task_before = e.task();
        let check = |e: &Entry| {
            let t = e.task();
            assert_eq!(t.status.state, TaskState::Completed);
            assert_eq!(t.status.message.as_ref().map(|m| m.text()).as_deref(), Some("up"));
            assert_eq!(t.status.message.as_ref().and_then(|m| m.task_id.as_deref()), Some("t1"));
            assert_eq!(t.history.iter().map(|m| m.text()).collect::<Vec<_>>(), ["status", "up"]);
            let events = e.events_from(0);
            assert_eq!(events.len(), 2, "{events:?}");
            assert!(matches!(&events[0], StreamEvent::Task(t) if t.status.state == TaskState::Submitted));
            assert!(
                matches!(&events[1], StreamEvent::Status(s) if s.is_final && s.status.state == TaskState::Completed)
            );
        };
        check(&e);
        assert!(!e.status(TaskState::Working, None, false).unwrap(), "a task that ended takes no more events");
        let log = std::fs::read_to_string(store.log_path()).unwrap();
        assert_eq!(log.lines().count(), 2, "{log}");
        // Its events (derived from the task, not kept) are its log lines, byte for byte.
        let events = e.events_from(0);
        let mut lines = Vec::new();
        for (seq, ev) in events.iter().enumerate() {
            serialize_line(&mut lines, "t1", seq as u64, ev);
        }
        assert_eq!(String::from_utf8(lines).unwrap(), log);
        assert_eq!(e.events_from(1), events[1..], "a stream resumed after the first event");
        // Its JSON, spliced from its lines, is the task's.
        assert_eq!(String::from_utf8(e.task_json()).unwrap(), serde_json::to_string(&e.task()).unwrap());
        assert_eq!(e.snapshot().1, 2);
        let page = rt().block_on(store.list(&ListFilter { limit: 10, ..Default::default() })).unwrap();
        assert_eq!(
            page.tasks.iter().map(|t| (t.id.as_str(), t.state)).collect::<Vec<_>>(),
            [("t1", TaskState::Completed)]
        );
        drop((store, e));
        let store = TaskStore::open(dir.path()).unwrap();
        let read = store.get_now("t1").unwrap();
        check(&read);
        assert_eq!(read.events_from(0), events, "the events read back from the log are the derived ones");
        assert_eq!(read.task(), task_before);
        // An end without a message (a completion that said nothing): one line of status alone.
        let quiet = store.create_ended("t2", "c1", msg("hi"), TaskState::Completed, None).unwrap();
        let quiet_events = quiet.events_from(0);
        assert_eq!(String::from_utf8(quiet.task_json()).unwrap(), serde_json::to_string(&quiet.task()).unwrap());
        drop((store, quiet));
        let store = TaskStore::open(dir.path()).unwrap();
        assert_eq!(store.get_now("t2").unwrap().events_from(0), quiet_events);
        assert_eq!(store.get_now("t2").unwrap().task().history.len(), 1);
    }

    /// The cache keeps at most `MAX_CACHED` tasks by dropping the oldest finished ones nobody
    /// holds, one for each that comes in; a running task, and one somebody holds, stays however
    /// old (the same entry, not a reload).
    #[test]
    fn the_oldest_finished_task_leaves_memory_first_and_running_or_held_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = TaskStore::open(dir.path()).unwrap();
        let running = store.create("running", "c", msg("hi")).unwrap();
        let held = store.create_ended("held", "c", msg("hi"), TaskState::Completed, None).unwrap();
        for n in 0..MAX_CACHED * 3 {
            store.create_ended(&format!("t{n}"), "c", msg("hi"), TaskState::Completed, None).unwrap();
            let cached = store.shared.tasks.lock().unwrap();
            assert!(cached.map.len() <= MAX_CACHED, "{} cached", cached.map.len());
            assert_eq!(cached.map.len(), cached.order.len(), "each cached task is in the order once");
        }
        let cached: Vec<String> = store.shared.tasks.lock().unwrap().order.iter().cloned().collect();
        // The newest finished ones are there, in the order they came; the oldest left. (The
        // two that stay go to the back each time they are passed over.)
        let finished: Vec<&String> = cached.iter().filter(|id| id.starts_with('t')).collect();
        let newest: Vec<String> = (MAX_CACHED * 3 - 10..MAX_CACHED * 3).map(|n| format!("t{n}")).collect();
        assert_eq!(finished[finished.len() - 10..], newest.iter().collect::<Vec<_>>()[..]);
        assert!(!cached.contains(&"t0".to_string()));
        for (id, entry) in [("running", &running), ("held", &held)] {
            assert!(cached.contains(&id.to_string()), "{id} stays cached");
            assert!(Arc::ptr_eq(&store.get_now(id).unwrap(), entry), "{id} is the same entry, not reloaded");
        }
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
        assert!(store.shared.tasks.lock().unwrap().map.len() <= MAX_CACHED, "finished tasks were evicted");
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
        let cached_big = store.shared.tasks.lock().unwrap().map.keys().filter(|k| k.starts_with("big")).count();
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
