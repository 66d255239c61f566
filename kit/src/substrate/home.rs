//! `Home` (a repository and its `worktrees/` directory) and `BranchDir` (one candidate branch's
//! directory), plus creating a branch's worktree.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use protocol::events::{Event, EventKind};
use protocol::names;
use serde::{Deserialize, Serialize};

use super::events::append_event;
use super::fsutil::{self, create_dir_all, now, read_versioned, write_json_atomic};
use super::{Result, SubstrateError};
use crate::files::Pending;
use crate::git::Git;

pub const META_VERSION: u32 = 1;

/// Read a branch's `meta.json`, refusing a newer version than this build's.
fn parse_meta(bytes: &[u8]) -> std::result::Result<BranchMeta, protocol::format::FormatError> {
    protocol::format::parse_versioned(bytes, "branch meta.json", META_VERSION)
}

/// A repository root and its `worktrees/` directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
    worktrees: PathBuf,
    run_id: String,
    /// The swarm instance this process belongs to (see [`Home::swarm`]).
    swarm: Option<String>,
    git: Git,
}

/// The environment variable naming the swarm instance of a member (set by `ratchet up`).
pub const SWARM_ID_ENV: &str = "RATCHET_SWARM_ID";

/// The swarm instance named by `RATCHET_SWARM_ID`, if set and not empty.
pub fn swarm_id_from_env() -> Option<String> {
    std::env::var(SWARM_ID_ENV).ok().filter(|s| !s.is_empty())
}

impl Home {
    /// Opens the repository whose top level is `repo_root` (it must contain `.git`). Creates
    /// nothing.
    pub fn open(repo_root: impl AsRef<Path>) -> Result<Home> {
        let given = repo_root.as_ref();
        let root = fs::canonicalize(given).map_err(SubstrateError::io("opening repository", given))?;
        if !root.join(".git").exists() {
            return Err(SubstrateError::NotARepo { path: root });
        }
        let worktrees = crate::layout::Layout::new(&root).worktrees();
        Ok(Home { git: Git::new(&root), root, worktrees, run_id: "substrate".to_string(), swarm: swarm_id_from_env() })
    }

    /// The swarm instance this handle works for: by default `RATCHET_SWARM_ID` of this process
    /// (a member of a `ratchet up` swarm), `None` for a process started by hand. Leases and
    /// results written through this handle carry it; the reaper refuses those of another
    /// instance.
    pub fn swarm(&self) -> Option<&str> {
        self.swarm.as_deref()
    }

    /// Work for swarm instance `swarm` (`None`: no swarm) instead of the environment's.
    pub fn with_swarm(mut self, swarm: Option<String>) -> Home {
        self.swarm = swarm;
        self
    }

    /// The swarm instance that replaced this handle's own, if any: `ratchet up` records the
    /// running instance in `worktrees/.swarm/state.json` (`run_id`), and a member whose own id
    /// differs is a leftover of a dead swarm. It should take no more work, and a coordinator
    /// should not reap. `None` for a process without a swarm id, and when no state is recorded.
    pub fn superseded_by(&self) -> Option<String> {
        let me = self.swarm.as_deref()?;
        #[derive(Deserialize)]
        struct Running {
            run_id: String,
        }
        let bytes = super::fsutil::read_small(&crate::layout::Layout::new(&self.root).state_file()).ok()?;
        let running: Running = serde_json::from_slice(&bytes).ok()?;
        (running.run_id != me).then_some(running.run_id)
    }

    /// The run id written into the events this handle appends.
    pub fn with_run_id(mut self, run_id: impl Into<String>) -> Home {
        self.run_id = run_id.into();
        self
    }

    /// An environment variable for every git command run through this handle (tests use
    /// `GIT_CONFIG_GLOBAL=/dev/null`, `GIT_CONFIG_NOSYSTEM=1`).
    pub fn with_git_env(mut self, key: &str, value: &str) -> Home {
        self.git = self.git.env(key, value);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn worktrees_dir(&self) -> &Path {
        &self.worktrees
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// git, run at the repository root.
    pub fn git(&self) -> &Git {
        &self.git
    }

    /// The directory of `branch` (validated; it need not exist yet).
    pub fn branch_dir(&self, branch: &str) -> Result<BranchDir> {
        names::check_branch(branch)?;
        Ok(BranchDir { home: self.clone(), branch: branch.to_string(), dir: self.worktrees.join(branch) })
    }

    /// Like [`Home::branch_dir`], but the directory must exist.
    pub fn open_branch(&self, branch: &str) -> Result<BranchDir> {
        let bd = self.branch_dir(branch)?;
        if !bd.dir.is_dir() {
            return Err(SubstrateError::NoSuchBranch { path: bd.dir });
        }
        Ok(bd)
    }

    /// Names of the branch directories under `worktrees/` (directories with a valid name;
    /// anything else there is left alone).
    pub fn branches(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.worktrees) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SubstrateError::Io { op: "listing", path: self.worktrees.clone(), source: e }),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(SubstrateError::io("listing", &self.worktrees))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if names::check_branch(&name).is_ok() && entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    pub(crate) fn promote_lock_path(&self) -> PathBuf {
        crate::layout::Layout::new(&self.root).promote_lock()
    }
}

/// The life of a candidate branch, as `meta.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BranchState {
    Active,
    Promoted,
    /// Judged worse, failing, blocked by a rail, or discarded by a person.
    Rejected,
    Archived,
    /// `main` moved past the branch's base: re-base and re-evaluate, or drop.
    Stale,
    /// Not promoted and not rejected: no change that matters, undecided, promotable but another
    /// candidate of its cycle was better, or stopped by the harness (never its fault).
    Held,
    /// Judged PROMOTE while cadence.md says promotion needs a person: waits for `ratchet
    /// approve <branch>` or `ratchet reject <branch>`.
    #[serde(rename = "awaiting-approval")]
    AwaitingApproval,
}

impl BranchState {
    /// Whether the branch's checkout may be removed by gc (a promotion waiting for a person
    /// keeps its checkout).
    pub fn is_final(self) -> bool {
        !matches!(self, BranchState::Active | BranchState::AwaitingApproval)
    }

    /// The name `meta.json` and `ratchet inspect` use.
    pub fn as_str(self) -> &'static str {
        match self {
            BranchState::Active => "active",
            BranchState::Promoted => "promoted",
            BranchState::Rejected => "rejected",
            BranchState::Archived => "archived",
            BranchState::Stale => "stale",
            BranchState::Held => "held",
            BranchState::AwaitingApproval => "awaiting-approval",
        }
    }
}

/// `worktrees/<branch>/meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchMeta {
    pub version: u32,
    pub branch: String,
    /// The commit the branch was created from.
    pub base: String,
    pub created_at: String,
    pub state: BranchState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Why the state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The commit `main` was fast-forwarded to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_commit: Option<String>,
    /// Set by gc once `tree/` is gone.
    #[serde(default)]
    pub checkout_removed: bool,
    /// The ref gc kept the branch's unpromoted commits under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_ref: Option<String>,
}

/// `worktrees/<branch>/`.
#[derive(Debug, Clone)]
pub struct BranchDir {
    pub(crate) home: Home,
    pub(crate) branch: String,
    pub(crate) dir: PathBuf,
}

impl BranchDir {
    pub fn home(&self) -> &Home {
        &self.home
    }
    pub fn branch(&self) -> &str {
        &self.branch
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }
    /// The git worktree checkout.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }
    pub fn tasks_dir(&self) -> PathBuf {
        self.dir.join("tasks")
    }
    pub fn leases_dir(&self) -> PathBuf {
        self.dir.join("leases")
    }
    pub fn expired_dir(&self) -> PathBuf {
        self.dir.join("leases").join("expired")
    }
    pub fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }
    pub fn artifacts_dir(&self) -> PathBuf {
        self.dir.join("artifacts")
    }
    /// `aside/`: the executor's, where what a gate wrote under the trusted tests waits out
    /// their run (outside the checkout, on its file system); gone after the run.
    pub fn aside_dir(&self) -> PathBuf {
        self.dir.join("aside")
    }
    /// `fresh/`: the executor's fresh checkout of the candidate's commit (a git worktree) where
    /// the baseline's tests run when ethos.md says `trusted_checkout = "fresh"`; gone after the
    /// run.
    pub fn fresh_checkout(&self) -> PathBuf {
        self.dir.join("fresh")
    }
    pub fn events_file(&self) -> PathBuf {
        self.dir.join("events").join("events.jsonl")
    }
    /// `jobs/`: a record per engine job a holder of this branch's tasks has running
    /// (`kit::jobs`); created by the first job.
    pub fn jobs_dir(&self) -> PathBuf {
        self.dir.join("jobs")
    }
    pub fn meta_path(&self) -> PathBuf {
        self.dir.join("meta.json")
    }
    pub fn task_path(&self, task: &str) -> Result<PathBuf> {
        names::check_task_id(task)?;
        Ok(self.tasks_dir().join(format!("{task}.json")))
    }
    pub fn lease_path(&self, task: &str) -> Result<PathBuf> {
        names::check_task_id(task)?;
        Ok(self.leases_dir().join(format!("{task}.lock")))
    }
    /// The lease-expiry record (and token tombstone) for `task` at `token`.
    pub fn expired_path(&self, task: &str, token: u64) -> Result<PathBuf> {
        names::check_task_id(task)?;
        Ok(self.expired_dir().join(format!("{task}.{token}.lock")))
    }
    pub fn result_path(&self, task: &str, token: u64) -> Result<PathBuf> {
        names::check_task_id(task)?;
        Ok(self.results_dir().join(format!("{task}.{token}.json")))
    }
    /// `artifacts/<task>/`, where a task's holder writes what it produces.
    pub fn artifact_dir(&self, task: &str) -> Result<PathBuf> {
        names::check_task_id(task)?;
        Ok(self.artifacts_dir().join(task))
    }
    /// `artifacts/<task>/<name>`.
    pub fn artifact_path(&self, task: &str, name: &str) -> Result<PathBuf> {
        names::check_artifact(name)?;
        Ok(self.artifact_dir(task)?.join(name))
    }

    pub fn read_meta(&self) -> Result<Option<BranchMeta>> {
        read_versioned(&self.meta_path(), parse_meta)
    }

    /// Records a new state in `meta.json` (under the branch's coordinator lock).
    pub fn set_state(&self, state: BranchState, note: Option<&str>) -> Result<BranchMeta> {
        let _guard = self.lock_coord()?;
        self.update_meta(|m| {
            m.state = state;
            m.note = note.map(String::from);
        })
    }

    /// Read-modify-write of `meta.json`; the caller holds the coordinator lock.
    pub(crate) fn update_meta(&self, f: impl FnOnce(&mut BranchMeta)) -> Result<BranchMeta> {
        let path = self.meta_path();
        let mut meta = self.read_meta()?.ok_or_else(|| SubstrateError::NoSuchBranch { path: path.clone() })?;
        f(&mut meta);
        meta.updated_at = Some(now());
        write_json_atomic(&path, &meta)?;
        Ok(meta)
    }

    /// Takes the branch's coordinator lock (blocking): whoever changes task files or
    /// `meta.json`, or moves lease files, holds it.
    pub(crate) fn lock_coord(&self) -> Result<File> {
        let path = self.dir.join(".coord.lock");
        let f =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| match e
                .kind()
            {
                std::io::ErrorKind::NotFound => SubstrateError::NoSuchBranch { path: self.dir.clone() },
                _ => SubstrateError::Io { op: "opening lock", path: path.clone(), source: e },
            })?;
        f.lock().map_err(SubstrateError::io("locking", &path))?;
        Ok(f)
    }

    /// An event of this branch (and task), stamped with the run id.
    pub fn event(&self, task: Option<&str>, kind: EventKind) -> Event {
        let mut e = Event::new(self.home.run_id.clone(), kind);
        e.branch = Some(self.branch.clone());
        e.task = task.map(String::from);
        e
    }

    /// Appends to this branch's event log.
    pub fn emit(&self, event: &Event) -> Result<()> {
        append_event(&self.events_file(), event)
    }

    /// `tasks/`, `leases/`, `results/`, `artifacts/` and the event log; `leases/expired/` is
    /// created by the reaper when it first expires a lease.
    pub(crate) fn create_control_dirs(&self) -> Result<()> {
        for d in
            [self.tasks_dir(), self.leases_dir(), self.results_dir(), self.artifacts_dir(), self.dir.join("events")]
        {
            create_dir_all(&d)?;
        }
        let events = self.events_file();
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&events)
            .map_err(SubstrateError::io("creating event log", &events))?;
        Ok(())
    }
}

/// Creates `worktrees/<branch>/` with its control directories and checks out a new branch
/// `<branch>` at `base_commit` in `worktrees/<branch>/tree` (`git worktree add -b`).
/// Nothing is created when the name is invalid or the base is not a commit.
pub fn add_worktree(home: &Home, branch: &str, base_commit: &str) -> Result<BranchDir> {
    let bd = home.branch_dir(branch)?;
    // A full commit id (what the coordinator passes) goes straight to `git worktree add`, which
    // refuses anything that is not a commit; anything else is resolved first.
    let base = if is_full_hex_id(base_commit) {
        base_commit.to_ascii_lowercase()
    } else {
        home.git()
            .resolve_commit(base_commit)?
            .ok_or_else(|| SubstrateError::NoSuchCommit { commit: base_commit.to_string(), repo: home.root.clone() })?
    };
    create_dir_all(&home.worktrees)?;
    match fs::create_dir(&bd.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(SubstrateError::BranchExists { path: bd.dir });
        }
        Err(e) => return Err(SubstrateError::Io { op: "creating directory", path: bd.dir, source: e }),
    }
    let tree = bd.tree();
    let args: [&std::ffi::OsStr; 7] = [
        "worktree".as_ref(),
        "add".as_ref(),
        "--quiet".as_ref(),
        "-b".as_ref(),
        branch.as_ref(),
        tree.as_os_str(),
        base.as_ref(),
    ];
    let added = home.git().start(args).map_err(SubstrateError::from).and_then(|running| {
        // While git checks out the files: the control directories and the meta file, which
        // becomes visible (renamed into place) only once the checkout exists.
        let prepared = prepare_control_files(&bd, &base);
        let checked_out = running.wait().map_err(SubstrateError::from);
        checked_out.and(prepared)
    });
    let meta = match added {
        Ok(pending) => pending,
        Err(e) => {
            let _ = fs::remove_dir_all(&bd.dir);
            if is_full_hex_id(base_commit) && home.git().resolve_commit(base_commit).ok().flatten().is_none() {
                return Err(SubstrateError::NoSuchCommit { commit: base_commit.to_string(), repo: home.root.clone() });
            }
            return Err(e);
        }
    };
    fsutil::commit(meta, &bd.meta_path())?;
    bd.emit(&bd.event(None, EventKind::WorktreeAdded { base }))?;
    Ok(bd)
}

/// Creates the control directories and writes meta.json to a temporary file, to be renamed
/// into place once the checkout exists.
fn prepare_control_files(bd: &BranchDir, base: &str) -> Result<Pending> {
    bd.create_control_dirs()?;
    let meta = BranchMeta {
        version: META_VERSION,
        branch: bd.branch.clone(),
        base: base.to_string(),
        created_at: now(),
        state: BranchState::Active,
        updated_at: None,
        note: None,
        promoted_commit: None,
        checkout_removed: false,
        archived_ref: None,
    };
    let mut bytes = serde_json::to_vec_pretty(&meta).expect("meta always serializes");
    bytes.push(b'\n');
    fsutil::prepare(&bd.meta_path(), &bytes)
}

/// A full SHA-1 or SHA-256 object id.
fn is_full_hex_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}
