//! What a sandboxed command sees, decided once and applied by either sandbox: bubblewrap
//! ([`Plan::bwrap_argv`]) or Ratchet's own namespaces launcher, the `ratchet-sandbox` binary
//! ([`launcher`], [`Plan::launcher_argv`]). Both apply the same [`Plan`], so both modes confine
//! alike:
//!
//! - the host's file system read-only, with nosuid and nodev (every mount below `/`);
//! - a minimal `/dev` (null, zero, full, random, urandom, tty, a private `/dev/shm` and `/dev/pts`)
//!   and a fresh `/proc` of the command's own pid namespace (`/proc/sys`, `/proc/sysrq-trigger`,
//!   `/proc/irq` and `/proc/bus` read-only);
//! - the host's `/tmp`, `/var/tmp` and `/run` hidden: empty private directories instead (`/tmp` is
//!   the command's `TMPDIR`; nothing in the host's temporary directories or sockets is reachable);
//! - the swarm's repository hidden: `<home>/worktrees/` (the swarm's private `.swarm/`, the other
//!   candidates' directories) and the repository's git directory are replaced by read-only empty
//!   directories, and only what the command's checkout needs comes back, read-only (see
//!   [`Plan::build`]);
//! - the checkout itself writable (its `.git` read-only unless the caller asks otherwise), and any
//!   extra writable directory the caller names (the proposer's program home); when these lie under
//!   the host's `/tmp`, the directories leading to them in the private `/tmp` are read-only (the
//!   command cannot create files that look like the host's there);
//! - own pid, mount, ipc and uts namespaces, and a network namespace with only a loopback unless the
//!   network is allowed; no capabilities, `no_new_privs`, a new session (no controlling terminal to
//!   inject input into); when the sandbox's first process ends, every process it started ends.
//!
//! Every path in a plan is canonical (no symlinks), so the same path means the same file inside
//! and outside.

pub mod launcher;
pub mod probe;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Host directories replaced by empty private ones. `/tmp` and `/var/tmp` stay writable (the
/// command's own temporary space); `/run` becomes read-only.
const HOST_TEMP: [&str; 2] = ["/tmp", "/var/tmp"];
const HOST_RUNTIME: [&str; 1] = ["/run"];

/// How many levels of git alternates are followed (git itself stops at 5).
const MAX_ALTERNATES_DEPTH: usize = 5;

/// The environment variable naming the namespaces launcher, overriding the search next to the
/// current executable.
pub const LAUNCHER_ENV: &str = "RATCHET_SANDBOX_LAUNCHER";
/// The launcher's binary name (a bin target of `kit`).
pub const LAUNCHER_NAME: &str = "ratchet-sandbox";
/// The launcher's exit code when it could not set up the sandbox; the reason is on stderr after
/// [`LAUNCHER_ERROR_PREFIX`] and, when the caller passed a report fd, in the [`Report`].
pub const LAUNCHER_SETUP_FAILED: i32 = 125;
pub const LAUNCHER_ERROR_PREFIX: &str = "ratchet-sandbox: ";

/// How the command ended, written by the launcher (or by its `--report-only` shim inside
/// bubblewrap) on a pipe only the sandbox holds: the command cannot forge it, and a signal is told
/// from an exit code (bubblewrap alone turns a signal into an exit `128 + n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Exited(i32),
    Signaled(i32),
    /// The sandbox could not be set up, or the command could not be executed.
    SetupFailed(String),
}

impl Report {
    pub fn line(&self) -> String {
        match self {
            Report::Exited(code) => format!("exit {code}\n"),
            Report::Signaled(signal) => format!("signal {signal}\n"),
            Report::SetupFailed(why) => format!("setup {}\n", why.replace('\n', " ")),
        }
    }

    /// The first report in `text` (a failed `exec` reports before the init reports the exit).
    pub fn parse(text: &str) -> Option<Report> {
        let line = text.lines().next()?;
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "exit" => rest.parse().ok().map(Report::Exited),
            "signal" => rest.parse().ok().map(Report::Signaled),
            "setup" => Some(Report::SetupFailed(rest.to_string())),
            _ => None,
        }
    }
}

/// What the launcher was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchArgs {
    pub plan: Plan,
    /// Where to write the [`Report`].
    pub report_fd: Option<i32>,
    /// Apply nothing: run the command, wait, report (the shim inside bubblewrap).
    pub report_only: bool,
    pub command: Vec<OsString>,
}

/// One step of building the command's view of the file system, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// The host's `/`, read-only, nosuid, nodev, with every mount below it.
    RoRoot,
    /// A minimal `/dev`.
    Dev,
    /// A fresh `/proc` for the command's pid namespace.
    Proc,
    /// An empty private tmpfs over this directory.
    Tmpfs(PathBuf),
    /// This path (file or directory) from the host at the same place, read-only.
    RoBind(PathBuf),
    /// This directory from the host at the same place, writable.
    Bind(PathBuf),
    /// The mount at this path (an earlier [`Mount::Tmpfs`]) made read-only.
    RemountRo(PathBuf),
    /// A directory (mode 0555: not writable by the command) on the way to a mount point inside the
    /// private writable `/tmp`: the command cannot create files that look like the host's there.
    Dir(PathBuf),
}

/// Everything a sandbox applies to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub mounts: Vec<Mount>,
    /// Keep the host's network namespace (the network is allowed).
    pub share_network: bool,
    /// The command's working directory (its checkout).
    pub cwd: PathBuf,
}

/// What a caller asks of the sandbox for one command.
#[derive(Debug, Clone)]
pub struct Confinement<'a> {
    /// The checkout: the working directory, writable.
    pub cwd: &'a Path,
    /// The swarm's repository (its home), whose `worktrees/` and git directory are hidden.
    pub repository: Option<&'a Path>,
    /// More writable directories (each must exist).
    pub writable: &'a [PathBuf],
    /// Whether the checkout's own `.git` is writable (the proposer's program may commit); otherwise
    /// it is read-only, so that no later git call outside the sandbox reads a configuration or a
    /// `gitdir:` the command planted.
    pub git_writable: bool,
    pub allow_network: bool,
}

impl<'a> Confinement<'a> {
    /// Only the checkout: no repository to hide, nothing else writable, `.git` read-only, no network.
    pub fn new(cwd: &'a Path) -> Confinement<'a> {
        Confinement { cwd, repository: None, writable: &[], git_writable: false, allow_network: false }
    }
}

/// Why a plan cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{path} is not usable as a sandbox path: {reason}")]
    Path { path: PathBuf, reason: String },
    #[error(
        "the checkout {cwd} contains the repository's {hidden}: commands run in a checkout of their own (under worktrees/), never in the repository itself"
    )]
    CheckoutContainsRepository { cwd: PathBuf, hidden: PathBuf },
}

fn canonical(path: &Path) -> Result<PathBuf, PlanError> {
    path.canonicalize().map_err(|e| PlanError::Path { path: path.to_path_buf(), reason: e.to_string() })
}

/// The git directory `dir/.git` leads to, and the common directory of that git directory:
/// `Some((gitdir, common))` for a checkout (`.git` a directory: both are it; `.git` a
/// `gitdir: X` file: X and X's `commondir`), `None` when `dir` has no `.git`.
pub fn git_dirs(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let dotgit = dir.join(".git");
    let meta = std::fs::symlink_metadata(&dotgit).ok()?;
    let gitdir = if meta.is_dir() {
        dotgit
    } else if meta.is_file() {
        let text = std::fs::read_to_string(&dotgit).ok()?;
        let target = text.lines().next()?.strip_prefix("gitdir:")?.trim();
        dir.join(target)
    } else {
        return None;
    };
    let gitdir = gitdir.canonicalize().ok()?;
    let common = match std::fs::read_to_string(gitdir.join("commondir")) {
        Ok(text) => gitdir.join(text.trim()).canonicalize().ok()?,
        Err(_) => gitdir.clone(),
    };
    Some((gitdir, common))
}

/// The object directories `objects` borrows from (git alternates), transitively, canonical.
fn alternates(objects: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = vec![];
    let mut frontier = vec![objects.to_path_buf()];
    for _ in 0..MAX_ALTERNATES_DEPTH {
        let mut next = vec![];
        for dir in frontier {
            let Ok(text) = std::fs::read_to_string(dir.join("info").join("alternates")) else { continue };
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                if let Ok(alt) = dir.join(line).canonicalize()
                    && !found.contains(&alt)
                {
                    found.push(alt.clone());
                    next.push(alt);
                }
            }
        }
        frontier = next;
    }
    found
}

impl Plan {
    /// The plan for one command. The checkout's git metadata decides what of the repository's git
    /// directory comes back (read-only):
    /// - a self-contained checkout (`.git` a directory inside it; the proposer's scratch and the
    ///   critic's bite-check scratch) needs only the object directories it borrows (alternates);
    /// - a linked worktree (`.git` a `gitdir:` file; the executor's candidate checkouts and the
    ///   evaluator's) needs the repository's common git directory (objects, refs, config) and its
    ///   own `worktrees/<id>`, not the other worktrees' metadata.
    pub fn build(c: &Confinement<'_>) -> Result<Plan, PlanError> {
        let cwd = canonical(c.cwd)?;
        let mut mounts = vec![Mount::RoRoot, Mount::Dev, Mount::Proc];
        // Tmpfs mounts so far: a path under one of them must be bound back to be seen.
        let mut hidden: Vec<PathBuf> = vec![];
        // Hidden directories made read-only at the end (after what is bound back inside them).
        let mut read_only: Vec<PathBuf> = vec![];
        for (dir, writable) in HOST_TEMP.iter().map(|d| (d, true)).chain(HOST_RUNTIME.iter().map(|d| (d, false))) {
            let Ok(dir) = Path::new(dir).canonicalize() else { continue };
            if dir.is_dir() && !hidden.contains(&dir) && dir != Path::new("/") {
                mounts.push(Mount::Tmpfs(dir.clone()));
                hidden.push(dir.clone());
                if !writable {
                    read_only.push(dir);
                }
            }
        }
        if let Some(repository) = c.repository {
            let repository = canonical(repository)?;
            let mut private = vec![crate::layout::Layout::new(&repository).worktrees()];
            if let Some((_, common)) = git_dirs(&repository) {
                private.push(common);
            }
            for dir in private.into_iter().filter(|d| d.is_dir()) {
                if dir.starts_with(&cwd) {
                    return Err(PlanError::CheckoutContainsRepository { cwd, hidden: dir });
                }
                mounts.push(Mount::Tmpfs(dir.clone()));
                hidden.push(dir.clone());
                read_only.push(dir);
            }
        }
        let is_hidden = |p: &Path, hidden: &[PathBuf]| hidden.iter().any(|h| p.starts_with(h));
        if let Some((gitdir, common)) = git_dirs(&cwd) {
            if !common.starts_with(&cwd) {
                // A linked worktree: the common directory read-only, its worktrees/ reduced to ours.
                if is_hidden(&common, &hidden) {
                    mounts.push(Mount::RoBind(common.clone()));
                }
                let worktrees = common.join("worktrees");
                if gitdir.starts_with(&worktrees) && worktrees.is_dir() {
                    mounts.push(Mount::Tmpfs(worktrees.clone()));
                    mounts.push(Mount::RoBind(gitdir.clone()));
                    hidden.push(worktrees.clone());
                    read_only.push(worktrees);
                }
            }
            for alt in alternates(&common.join("objects")) {
                if is_hidden(&alt, &hidden) {
                    mounts.push(Mount::RoBind(alt));
                }
            }
        }
        mounts.push(Mount::Bind(cwd.clone()));
        let dotgit = cwd.join(".git");
        if !c.git_writable && std::fs::symlink_metadata(&dotgit).is_ok_and(|m| m.is_dir() || m.is_file()) {
            mounts.push(Mount::RoBind(dotgit));
        }
        for dir in c.writable {
            mounts.push(Mount::Bind(canonical(dir)?));
        }
        if c.allow_network
            && let Ok(resolv) = Path::new("/etc/resolv.conf").canonicalize()
            && is_hidden(&resolv, &hidden)
        {
            // Name resolution through a stub in /run (systemd-resolved): its configuration comes back.
            mounts.push(Mount::RoBind(resolv));
        }
        mounts.extend(read_only.into_iter().map(Mount::RemountRo));
        // The directories leading to what is mounted inside a writable temporary directory (a
        // checkout under the host's /tmp, say) are made read-only, right after that directory's tmpfs.
        let targets: Vec<PathBuf> = mounts
            .iter()
            .filter_map(|m| match m {
                Mount::Tmpfs(p) | Mount::RoBind(p) | Mount::Bind(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let temps: Vec<PathBuf> =
            HOST_TEMP.iter().filter_map(|d| Path::new(d).canonicalize().ok()).filter(|d| targets.contains(d)).collect();
        let mut dirs: Vec<PathBuf> = vec![];
        for target in &targets {
            for temp in temps.iter().filter(|t| target.starts_with(t) && target != *t) {
                // Only those in the temporary tmpfs itself, not below another mount.
                let ancestors = target.ancestors().skip(1).take_while(|a| a != temp);
                let in_temp = |a: &Path| !targets.iter().any(|t| t != temp && a.starts_with(t));
                dirs.extend(ancestors.filter(|a| in_temp(a)).map(Path::to_path_buf));
            }
        }
        dirs.sort_by_key(|d| d.components().count());
        dirs.dedup();
        let after_temps = mounts
            .iter()
            .rposition(|m| matches!(m, Mount::Tmpfs(p) if temps.contains(p)))
            .map_or(mounts.len(), |i| i + 1);
        mounts.splice(after_temps..after_temps, dirs.into_iter().map(Mount::Dir));
        Ok(Plan { mounts, share_network: c.allow_network, cwd })
    }

    /// `bwrap ... -- <shim> --report-only --report-fd N -- sh -c command` applying this plan; the
    /// shim (the launcher binary, bound read-only at its own path) writes the [`Report`] on fd
    /// `report_fd`. As root, bubblewrap keeps every capability unless told otherwise
    /// (`--cap-drop ALL`): with them a command could unmount what hides the host's files.
    pub fn bwrap_argv(&self, shim: &Path, report_fd: Option<i32>, command: &str) -> Vec<OsString> {
        let mut argv = os(&[
            "bwrap",
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--cap-drop",
            "ALL",
        ]);
        if !self.share_network {
            argv.push("--unshare-net".into());
        }
        let shim_bind = Mount::RoBind(shim.to_path_buf());
        let first_remount =
            self.mounts.iter().position(|m| matches!(m, Mount::RemountRo(_))).unwrap_or(self.mounts.len());
        let mounts = self.mounts[..first_remount].iter().chain([&shim_bind]).chain(&self.mounts[first_remount..]);
        for m in mounts {
            if matches!(m, Mount::Dir(_)) {
                argv.extend(os(&["--perms", "0555"]));
            }
            let (flag, path, twice) = match m {
                Mount::RoRoot => ("--ro-bind", Path::new("/"), true),
                Mount::Dev => ("--dev", Path::new("/dev"), false),
                Mount::Proc => ("--proc", Path::new("/proc"), false),
                Mount::Tmpfs(p) => ("--tmpfs", p.as_path(), false),
                Mount::RoBind(p) => ("--ro-bind", p.as_path(), true),
                Mount::Bind(p) => ("--bind", p.as_path(), true),
                Mount::RemountRo(p) => ("--remount-ro", p.as_path(), false),
                Mount::Dir(p) => ("--dir", p.as_path(), false),
            };
            argv.push(flag.into());
            if twice {
                argv.push(path.into());
            }
            argv.push(path.into());
        }
        argv.extend([OsString::from("--chdir"), self.cwd.clone().into()]);
        argv.extend(os(&["--setenv", "TMPDIR", "/tmp", "--"]));
        argv.extend([shim.as_os_str().to_owned(), "--report-only".into()]);
        if let Some(fd) = report_fd {
            argv.extend(["--report-fd".into(), fd.to_string().into()]);
        }
        argv.extend(os(&["--", "sh", "-c", command]));
        argv
    }

    /// `<launcher> --report-fd N ... -- sh -c command` applying this plan with Ratchet's own
    /// namespaces launcher.
    pub fn launcher_argv(&self, launcher: &Path, report_fd: Option<i32>, command: &str) -> Vec<OsString> {
        let mut argv = vec![launcher.as_os_str().to_owned()];
        if let Some(fd) = report_fd {
            argv.extend(["--report-fd".into(), fd.to_string().into()]);
        }
        if self.share_network {
            argv.push("--share-net".into());
        }
        for m in &self.mounts {
            match m {
                Mount::RoRoot => argv.push("--ro-root".into()),
                Mount::Dev => argv.push("--dev".into()),
                Mount::Proc => argv.push("--proc".into()),
                Mount::Tmpfs(p) => argv.extend(["--tmpfs".into(), p.clone().into()]),
                Mount::RoBind(p) => argv.extend(["--ro-bind".into(), p.clone().into()]),
                Mount::Bind(p) => argv.extend(["--bind".into(), p.clone().into()]),
                Mount::RemountRo(p) => argv.extend(["--remount-ro".into(), p.clone().into()]),
                Mount::Dir(p) => argv.extend(["--dir".into(), p.clone().into()]),
            }
        }
        argv.extend([OsString::from("--chdir"), self.cwd.clone().into()]);
        argv.extend(os(&["--", "sh", "-c", command]));
        argv
    }
}

impl LaunchArgs {
    /// Parses the launcher's arguments (without the program name).
    pub fn parse(args: &[OsString]) -> Result<LaunchArgs, String> {
        let mut plan = Plan { mounts: vec![], share_network: false, cwd: PathBuf::from("/") };
        let (mut report_fd, mut report_only) = (None, false);
        let mut it = args.iter();
        let path = |flag: &str, v: Option<&OsString>| -> Result<PathBuf, String> {
            let p = PathBuf::from(v.ok_or_else(|| format!("{flag} needs a path"))?);
            if p.is_absolute() { Ok(p) } else { Err(format!("{flag} {}: the path must be absolute", p.display())) }
        };
        while let Some(arg) = it.next() {
            match arg.to_str() {
                Some("--share-net") => plan.share_network = true,
                Some("--report-only") => report_only = true,
                Some("--report-fd") => {
                    let fd =
                        it.next().and_then(|v| v.to_str()).and_then(|v| v.parse::<i32>().ok()).filter(|fd| *fd > 2);
                    report_fd = Some(fd.ok_or("--report-fd needs a file descriptor number above 2")?);
                }
                Some("--ro-root") => plan.mounts.push(Mount::RoRoot),
                Some("--dev") => plan.mounts.push(Mount::Dev),
                Some("--proc") => plan.mounts.push(Mount::Proc),
                Some(flag @ "--tmpfs") => plan.mounts.push(Mount::Tmpfs(path(flag, it.next())?)),
                Some(flag @ "--ro-bind") => plan.mounts.push(Mount::RoBind(path(flag, it.next())?)),
                Some(flag @ "--bind") => plan.mounts.push(Mount::Bind(path(flag, it.next())?)),
                Some(flag @ "--remount-ro") => plan.mounts.push(Mount::RemountRo(path(flag, it.next())?)),
                Some(flag @ "--dir") => plan.mounts.push(Mount::Dir(path(flag, it.next())?)),
                Some(flag @ "--chdir") => plan.cwd = path(flag, it.next())?,
                Some("--") => {
                    let command: Vec<OsString> = it.cloned().collect();
                    if command.is_empty() {
                        return Err("nothing to run after --".into());
                    }
                    if report_only && (!plan.mounts.is_empty() || plan.share_network) {
                        return Err("--report-only applies no plan".into());
                    }
                    return Ok(LaunchArgs { plan, report_fd, report_only, command });
                }
                _ => return Err(format!("unknown argument {:?}", arg.to_string_lossy())),
            }
        }
        Err("missing `-- COMMAND...`".into())
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// The namespaces launcher: `RATCHET_SANDBOX_LAUNCHER` when set, else `ratchet-sandbox` next to
/// the current executable, or one directory up (test binaries live in `target/<profile>/deps`).
pub fn launcher_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(LAUNCHER_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            canonical(&path).map_err(|e| e.to_string())
        } else {
            Err(format!("{LAUNCHER_ENV}={} is not a file; point it at the ratchet-sandbox binary", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the current executable: {e}"))?;
    let dir = exe.parent().ok_or("the current executable has no directory")?;
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(LAUNCHER_NAME))
        .find(|p| p.is_file())
        .and_then(|p| p.canonicalize().ok())
        .ok_or_else(|| {
            format!(
                "{LAUNCHER_NAME} is not next to {} (build it with `cargo build --workspace --bins`, or set {LAUNCHER_ENV})",
                exe.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str) {
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A repository with a linked worktree under worktrees/b/tree and a self-contained clone that
    /// borrows its objects.
    fn layout() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().canonicalize().unwrap().join("home");
        std::fs::create_dir_all(&home).unwrap();
        sh(
            &home,
            "git init -q -b main && echo a > f && git add f && git -c user.name=t -c user.email=t@t commit -qm a \
             && mkdir -p worktrees/.swarm worktrees/b worktrees/c && git worktree add -q --detach worktrees/b/tree \
             && git worktree add -q --detach worktrees/c/tree \
             && git init -q worktrees/.swarm/scratch && echo \"$PWD/.git/objects\" > worktrees/.swarm/scratch/.git/objects/info/alternates",
        );
        (tmp, home)
    }

    #[test]
    fn a_linked_worktree_sees_the_common_git_dir_read_only_and_only_its_own_metadata() {
        let (_tmp, home) = layout();
        let cwd = home.join("worktrees/b/tree");
        let plan = Plan::build(&Confinement { repository: Some(&home), ..Confinement::new(&cwd) }).unwrap();
        let git = home.join(".git");
        let worktrees = home.join("worktrees");
        // The host's temporary and runtime directories first (those this machine has), then:
        let system = |m: &Mount| matches!(m, Mount::Tmpfs(p) | Mount::RemountRo(p) if HOST_TEMP.iter().chain(&HOST_RUNTIME).any(|d| p == Path::new(d)));
        assert!(plan.mounts.contains(&Mount::Tmpfs("/tmp".into())), "{:?}", plan.mounts);
        // The test's home is under /tmp: the directories leading to it come read-only, parents first.
        let dirs: Vec<&Mount> = plan.mounts.iter().filter(|m| matches!(m, Mount::Dir(_))).collect();
        let expected: Vec<PathBuf> = {
            let mut a: Vec<PathBuf> =
                home.ancestors().take_while(|a| *a != Path::new("/tmp")).map(Path::to_path_buf).collect();
            a.reverse();
            a
        };
        assert_eq!(dirs, expected.iter().map(|d| Mount::Dir(d.clone())).collect::<Vec<_>>().iter().collect::<Vec<_>>());
        let rest: Vec<Mount> =
            plan.mounts.iter().filter(|m| !system(m) && !matches!(m, Mount::Dir(_))).cloned().collect();
        assert_eq!(
            rest,
            [
                Mount::RoRoot,
                Mount::Dev,
                Mount::Proc,
                Mount::Tmpfs(worktrees.clone()),
                Mount::Tmpfs(git.clone()),
                Mount::RoBind(git.clone()),
                Mount::Tmpfs(git.join("worktrees")),
                Mount::RoBind(git.join("worktrees/tree")),
                Mount::Bind(cwd.clone()),
                Mount::RoBind(cwd.join(".git")),
                Mount::RemountRo(worktrees),
                Mount::RemountRo(git.clone()),
                Mount::RemountRo(git.join("worktrees")),
            ]
        );
        assert!(!plan.share_network);
        assert_eq!(plan.cwd, cwd);
    }

    #[test]
    fn a_self_contained_checkout_sees_only_the_borrowed_objects() {
        let (_tmp, home) = layout();
        let cwd = home.join("worktrees/.swarm/scratch");
        let writable = [home.join("worktrees/b")];
        let c = Confinement {
            cwd: &cwd,
            repository: Some(&home),
            writable: &writable,
            git_writable: true,
            allow_network: true,
        };
        let plan = Plan::build(&c).unwrap();
        let binds: Vec<&Mount> =
            plan.mounts.iter().filter(|m| matches!(m, Mount::RoBind(_) | Mount::Bind(_))).collect();
        assert_eq!(
            binds,
            [&Mount::RoBind(home.join(".git/objects")), &Mount::Bind(cwd.clone()), &Mount::Bind(writable[0].clone())]
        );
        assert!(plan.share_network);
    }

    #[test]
    fn the_repository_itself_is_never_a_checkout() {
        let (_tmp, home) = layout();
        let err = Plan::build(&Confinement { repository: Some(&home), ..Confinement::new(&home) }).unwrap_err();
        assert!(matches!(err, PlanError::CheckoutContainsRepository { .. }), "{err}");
        assert!(err.to_string().contains("never in the repository itself"), "{err}");
    }

    #[test]
    fn bwrap_and_launcher_argv_apply_the_same_plan() {
        let plan = Plan {
            mounts: vec![
                Mount::RoRoot,
                Mount::Dev,
                Mount::Proc,
                Mount::Tmpfs("/tmp".into()),
                Mount::RoBind("/r/.git".into()),
                Mount::Bind("/r/w".into()),
                Mount::RemountRo("/r/x".into()),
            ],
            share_network: false,
            cwd: "/r/w".into(),
        };
        let words =
            |argv: Vec<OsString>| argv.iter().map(|a| a.to_str().unwrap().to_owned()).collect::<Vec<_>>().join(" ");
        assert_eq!(
            words(plan.bwrap_argv(Path::new("/bin/rs"), Some(7), "make test")),
            "bwrap --die-with-parent --new-session --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try \
             --cap-drop ALL --unshare-net --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --ro-bind /r/.git /r/.git \
             --bind /r/w /r/w --ro-bind /bin/rs /bin/rs --remount-ro /r/x --chdir /r/w --setenv TMPDIR /tmp \
             -- /bin/rs --report-only --report-fd 7 -- sh -c make test"
        );
        let argv = plan.launcher_argv(Path::new("/bin/ratchet-sandbox"), Some(9), "make test");
        assert_eq!(
            words(argv.clone()),
            "/bin/ratchet-sandbox --report-fd 9 --ro-root --dev --proc --tmpfs /tmp --ro-bind /r/.git --bind /r/w \
             --remount-ro /r/x --chdir /r/w -- sh -c make test"
        );
        let parsed = LaunchArgs::parse(&argv[1..]).unwrap();
        assert_eq!((&parsed.plan, parsed.report_fd, parsed.report_only), (&plan, Some(9), false));
        assert_eq!(parsed.command, os(&["sh", "-c", "make test"]));
        let shared = Plan { share_network: true, ..plan };
        assert!(!words(shared.bwrap_argv(Path::new("/s"), None, "x")).contains("--unshare-net"));
        assert_eq!(LaunchArgs::parse(&shared.launcher_argv(Path::new("/l"), None, "x")[1..]).unwrap().plan, shared);
        let shim = LaunchArgs::parse(&os(&["--report-only", "--report-fd", "5", "--", "sh"])).unwrap();
        assert!(shim.report_only && shim.plan.mounts.is_empty());
        for bad in [
            &["--tmpfs"][..],
            &["--bind", "relative", "--", "x"],
            &["--frobnicate"],
            &["--dev"],
            &["--"],
            &["--report-fd", "1", "--", "x"],
            &["--report-only", "--dev", "--", "x"],
        ] {
            assert!(LaunchArgs::parse(&os(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reports_round_trip() {
        for r in [Report::Exited(3), Report::Signaled(9), Report::SetupFailed("mount: EPERM".into())] {
            assert_eq!(Report::parse(&r.line()), Some(r));
        }
        // A failed exec reports first; the init's later "exit 127" does not hide it.
        let both = Report::SetupFailed("cannot run sh: ENOENT".into()).line() + &Report::Exited(127).line();
        assert_eq!(Report::parse(&both), Some(Report::SetupFailed("cannot run sh: ENOENT".into())));
        assert_eq!(Report::parse(""), None);
        assert_eq!(Report::parse("garbage"), None);
    }
}
