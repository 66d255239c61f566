//! Finding work without polling storms: file-system notifications on the branches' `tasks/`
//! and `leases/` directories (inotify on Linux), with a slow rescan as the safety net for
//! anything a notification misses (a watch added late, an overflowed queue, a remote file system).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use notify::{EventKind as FsEventKind, RecommendedWatcher, RecursiveMode, Watcher, event::ModifyKind};

use super::fsutil::create_dir_all;
use super::home::Home;
use super::tasks::{claimable, scan_tasks};
use super::{Result, SubstrateError};

/// Tasks an agent of `role` may try to claim now, as `(branch, task_id)`, in a stable order:
/// queued, of that role, no lease file, token not being expired, on an active branch.
pub fn find_claimable(home: &Home, role: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for branch in home.branches()? {
        let bd = home.branch_dir(&branch)?;
        match bd.read_meta() {
            Ok(Some(meta)) if !meta.state.is_final() => {}
            _ => continue,
        }
        let (tasks, _) = scan_tasks(&bd)?;
        for task in tasks {
            if !claimable(&task, role) || bd.lease_path(&task.id)?.exists() {
                continue;
            }
            if bd.expired_path(&task.id, task.token)?.exists() {
                continue;
            }
            out.push((branch.clone(), task.id));
        }
    }
    Ok(out)
}

/// How often an agent rescans for work when no notification arrives (the safety net).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

/// How often the watcher thread looks for new branch directories without being told.
const REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// Calls a callback when tasks or leases change under `worktrees/`: a notify watcher on
/// `worktrees/` itself (new branches) and on each branch's `tasks/` and `leases/` (not
/// recursive: builds in the checkouts must not wake anyone). Heartbeats and reads do not count.
/// The watch stops when this is dropped.
pub struct TaskWatcher {
    stop: Arc<AtomicBool>,
    watched: Arc<Mutex<HashSet<PathBuf>>>,
}

impl std::fmt::Debug for TaskWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskWatcher").finish_non_exhaustive()
    }
}

impl Drop for TaskWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl TaskWatcher {
    /// Watches every branch's `tasks/` and `leases/` under `worktrees_dir` (what an agent
    /// looking for work needs) and calls `on_change` after each relevant change.
    pub fn new(worktrees_dir: &Path, on_change: impl Fn() + Send + 'static) -> Result<TaskWatcher> {
        TaskWatcher::for_dirs(worktrees_dir, &["tasks", "leases"], on_change)
    }

    /// Watches the given subdirectories of every branch directory (the reaper may watch
    /// `results` and `leases`).
    pub fn for_dirs(
        worktrees_dir: &Path,
        subdirs: &[&str],
        on_change: impl Fn() + Send + 'static,
    ) -> Result<TaskWatcher> {
        let root = worktrees_dir.to_path_buf();
        create_dir_all(&root)?;
        let (raw_tx, raw_rx) = mpsc::channel::<notify::Event>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                let _ = raw_tx.send(ev);
            }
        })
        .map_err(|e| watch_error(root.clone(), e))?;
        watcher.watch(&root, RecursiveMode::NonRecursive).map_err(|e| watch_error(root.clone(), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let watched = Arc::new(Mutex::new(HashSet::new()));
        let mut state = WatchThread {
            root,
            subdirs: subdirs.iter().map(|s| s.to_string()).collect(),
            watcher,
            watched: watched.clone(),
        };
        state.refresh();
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("task-watcher".into())
            .spawn(move || state.run(raw_rx, stop2, on_change))
            .map_err(SubstrateError::io("starting watcher thread for", worktrees_dir))?;
        Ok(TaskWatcher { stop, watched })
    }

    /// A watcher whose changes are waited for with [`Wakeups::wait`], with a rescan every
    /// `rescan` as the safety net.
    pub fn blocking(worktrees_dir: &Path, rescan: Duration) -> Result<(TaskWatcher, Wakeups)> {
        let (tx, rx) = mpsc::channel();
        let w = TaskWatcher::new(worktrees_dir, move || {
            let _ = tx.send(());
        })?;
        Ok((w, Wakeups { rx, rescan, next_rescan: Instant::now() + rescan }))
    }

    /// The directories currently watched (besides `worktrees/` itself).
    pub fn watched(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.watched.lock().map(|w| w.iter().cloned().collect()).unwrap_or_default();
        v.sort();
        v
    }
}

struct WatchThread {
    root: PathBuf,
    subdirs: Vec<String>,
    watcher: RecommendedWatcher,
    watched: Arc<Mutex<HashSet<PathBuf>>>,
}

impl WatchThread {
    fn run(mut self, raw: mpsc::Receiver<notify::Event>, stop: Arc<AtomicBool>, on_change: impl Fn()) {
        let mut last_refresh = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let first = match raw.recv_timeout(REFRESH_INTERVAL) {
                Ok(ev) => Some(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut changed = false;
            let mut new_dirs = false;
            for ev in first.into_iter().chain(std::iter::from_fn(|| raw.try_recv().ok())) {
                // Only real changes count: our own `read_dir` of the root raises access events
                // on it, and reacting to those would spin.
                if !relevant(&ev.kind) {
                    continue;
                }
                changed = true;
                if ev.paths.iter().any(|p| p.parent() == Some(self.root.as_path()) || p == &self.root) {
                    new_dirs = true;
                }
            }
            if new_dirs || last_refresh.elapsed() >= REFRESH_INTERVAL {
                // A new branch directory: watch its subdirectories, then let the caller rescan
                // (tasks written before the watch was added are found by that rescan).
                if self.refresh() {
                    changed = true;
                }
                last_refresh = Instant::now();
            }
            if changed && !stop.load(Ordering::Relaxed) {
                on_change();
            }
        }
    }

    /// Adds watches for branch directories created since the last call; true when it added any.
    fn refresh(&mut self) -> bool {
        let Ok(rd) = std::fs::read_dir(&self.root) else { return false };
        let mut added = false;
        let mut watched = self.watched.lock().expect("the watched set is never poisoned: no code panics under it");
        for entry in rd.flatten() {
            let Ok(name) = entry.file_name().into_string() else { continue };
            if protocol::names::check_branch(&name).is_err() {
                continue;
            }
            for sub in &self.subdirs {
                let dir = self.root.join(&name).join(sub);
                if watched.contains(&dir) || !dir.is_dir() {
                    continue;
                }
                if self.watcher.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
                    watched.insert(dir);
                    added = true;
                }
            }
        }
        added
    }
}

/// Why [`Wakeups::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// Something changed in a watched directory.
    Changed,
    /// The rescan interval passed without a notification.
    Rescan,
}

/// The receiving end of [`TaskWatcher::blocking`].
#[derive(Debug)]
pub struct Wakeups {
    rx: mpsc::Receiver<()>,
    rescan: Duration,
    next_rescan: Instant,
}

impl Wakeups {
    /// Blocks until something changes (a burst counts once) or the rescan interval passes.
    /// Callers look for work after every wakeup.
    pub fn wait(&mut self) -> Wakeup {
        let timeout = self.next_rescan.saturating_duration_since(Instant::now());
        let woke = match self.rx.recv_timeout(timeout) {
            Ok(()) => {
                while self.rx.try_recv().is_ok() {}
                Wakeup::Changed
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Wakeup::Rescan,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                Wakeup::Rescan
            }
        };
        if woke == Wakeup::Rescan {
            self.next_rescan = Instant::now() + self.rescan;
        }
        woke
    }
}

/// Opening, reading and touching files (heartbeats) do not change what can be claimed.
fn relevant(kind: &FsEventKind) -> bool {
    !matches!(kind, FsEventKind::Access(_) | FsEventKind::Modify(ModifyKind::Metadata(_)))
}

fn watch_error(path: PathBuf, e: notify::Error) -> SubstrateError {
    SubstrateError::Io {
        op: "watching",
        path,
        source: std::io::Error::other(format!(
            "{e}; if the inotify watch limit is reached raise fs.inotify.max_user_watches"
        )),
    }
}
