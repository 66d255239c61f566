//! A sandbox that confines (issue 8, item 2): what an executed command tries against the swarm must
//! fail, in both confining modes (bubblewrap and Ratchet's own namespaces launcher, each run
//! explicitly), while the same attack run in the weak `plain` mode works (the control: each test
//! bites). Every attack runs as the executor runs a gate: through `kit::exec`, in a candidate's
//! checkout (a linked worktree under `worktrees/`), with the swarm's repository hidden.
//!
//! The last tests run a real swarm (`ratchet up` and the five agents) whose proposer's program and
//! whose candidate's tests (run by the executor's gate and the critic's bite check) attack: `main`,
//! the refs and the swarm's files stay untouched and nothing they start survives.

use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use kit::exec::{RunOutcome, RunSpec, SandboxMode};
use ratchet_tests::fixture::{Proposer, Spec, Target, read_jsonl};
use ratchet_tests::{git_in, rt};
use serde_json::Value;

const RUN: Duration = Duration::from_secs(180);

/// The confining modes, each tested explicitly. Bubblewrap is required (`tests/run` installs it)
/// unless `RATCHET_TEST_SKIP_BWRAP=1` says this machine cannot have it.
fn confined() -> Vec<SandboxMode> {
    let mut modes = vec![SandboxMode::Namespaces];
    let bwrap = kit::sandbox::probe::cached().mode(SandboxMode::Bwrap).is_some_and(|m| m.confines());
    if bwrap {
        modes.push(SandboxMode::Bwrap);
    } else if std::env::var("RATCHET_TEST_SKIP_BWRAP").as_deref() == Ok("1") {
        println!("note: bubblewrap does not work here; its leg is skipped (RATCHET_TEST_SKIP_BWRAP=1)");
    } else {
        panic!("bubblewrap does not work here: tests/run installs it (apt-get install bubblewrap)");
    }
    modes
}

/// A swarm home laid out as while a swarm runs, outside the host's temporary directory (which the
/// sandbox hides whole): under the build's `target/tmp`.
struct Home {
    _tmp: tempfile::TempDir,
    _outside_tmp: tempfile::TempDir,
    /// The repository (on `main`).
    root: PathBuf,
    /// The command's checkout: `worktrees/c1/tree`, a linked worktree on branch `c1`.
    checkout: PathBuf,
    /// Another candidate's checkout: `worktrees/c2/tree`.
    other: PathBuf,
    /// A directory in the host's /tmp, outside the repository.
    outside: PathBuf,
    /// The `HOME` the command gets.
    user_home: PathBuf,
}

impl Home {
    fn new() -> Home {
        let tmp =
            tempfile::Builder::new().prefix("ratchet-sbx-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let base = tmp.path().canonicalize().expect("canonical temp dir");
        let host_tmp = tempfile::Builder::new().prefix("ratchet-sbx-").tempdir().expect("temp dir");
        let root = base.join("repo");
        let (outside, user_home) = (host_tmp.path().canonicalize().unwrap().join("outside"), base.join("user-home"));
        for d in [&root, &outside, &user_home] {
            std::fs::create_dir_all(d).expect("create dirs");
        }
        std::fs::write(root.join(".gitignore"), "worktrees/\n").unwrap();
        std::fs::write(root.join("f"), "one\n").unwrap();
        git_in(&root, &["init", "-q", "-b", "main"]);
        git_in(&root, &["add", "-A"]);
        git_in(&root, &["commit", "-qm", "one"]);
        git_in(&root, &["worktree", "add", "-q", "-b", "c1", "worktrees/c1/tree"]);
        git_in(&root, &["worktree", "add", "-q", "-b", "c2", "worktrees/c2/tree"]);
        let swarm = root.join("worktrees/.swarm");
        std::fs::create_dir_all(swarm.join("baselines")).unwrap();
        std::fs::write(swarm.join("state.json"), "{\"agents\": [], \"secret-marker\": \"state-9d2f\"}\n").unwrap();
        std::fs::write(swarm.join("token"), "swarm-secret-5b7e\n").unwrap();
        std::fs::write(outside.join("marker"), "host-tmp-4c1a\n").unwrap();
        Home {
            checkout: root.join("worktrees/c1/tree"),
            other: root.join("worktrees/c2/tree"),
            root,
            outside,
            user_home,
            _tmp: tmp,
            _outside_tmp: host_tmp,
        }
    }

    fn main(&self) -> String {
        git_in(&self.root, &["rev-parse", "refs/heads/main"])
    }

    /// Every ref and where it points.
    fn refs(&self) -> String {
        git_in(&self.root, &["for-each-ref", "--format=%(refname) %(objectname)"])
    }

    /// Runs `script` as a gate would run in the checkout, under `mode`.
    fn run(&self, mode: SandboxMode, script: &str) -> RunOutcome {
        let spec = RunSpec::new(script, &self.checkout)
            .with_sandbox(mode)
            .with_weak_sandbox_allowed(mode == SandboxMode::Plain)
            .with_repository(&self.root)
            .with_env("HOME", self.user_home.to_string_lossy())
            .with_env("GIT_CONFIG_GLOBAL", "/dev/null")
            .with_env("GIT_CONFIG_NOSYSTEM", "1")
            .with_timeout(Duration::from_secs(60));
        rt().block_on(spec.run())
    }
}

/// One attack: a script that exits 0 when it worked, and the host-side check of its effect.
struct Attack {
    name: &'static str,
    script: String,
    worked: Box<dyn Fn(&RunOutcome) -> bool>,
}

impl Attack {
    fn new(name: &'static str, script: String, worked: impl Fn(&RunOutcome) -> bool + 'static) -> Attack {
        Attack { name, script, worked: Box::new(worked) }
    }
}

/// Each attack against a fresh home per mode: it works in plain (the control) and fails in every
/// confining mode (the script's exit and the effect both say so).
fn check(attacks: impl Fn(&Home) -> Vec<Attack>) {
    let control = Home::new();
    for a in attacks(&control) {
        let out = control.run(SandboxMode::Plain, &a.script);
        assert!(
            out.success() && (a.worked)(&out),
            "control: `{}` did not work without the sandbox, so this test tests nothing: {out:?}",
            a.name
        );
    }
    for mode in confined() {
        let home = Home::new();
        for a in attacks(&home) {
            let out = home.run(mode, &a.script);
            assert_eq!(out.sandbox, mode);
            assert!(!out.success() && !(a.worked)(&out), "{mode}: `{}` worked inside the sandbox: {out:?}", a.name);
            assert!(!out.is_infra_failure(), "{mode}: `{}` did not run as a command: {out:?}", a.name);
        }
    }
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn writes_outside_the_checkout_are_refused() {
    check(|h| {
        let targets = [
            ("the repository root", h.root.join("pwned")),
            ("the host's /tmp", h.outside.join("pwned")),
            ("worktrees/.swarm", h.root.join("worktrees/.swarm/pwned")),
            ("the trusted benchmark copy", h.root.join("worktrees/.swarm/baselines/pwned")),
            ("another candidate's checkout", h.other.join("pwned")),
            ("$HOME", h.user_home.join("pwned")),
            ("the parent .git", h.root.join(".git/pwned")),
        ];
        let mut attacks: Vec<Attack> = targets
            .into_iter()
            .map(|(name, path)| {
                let check = path.clone();
                Attack::new(name, format!("echo x > {}", q(&path)), move |_| check.exists())
            })
            .collect();
        // The checkout's own .git file (a planted gitdir would redirect later git calls outside).
        let dotgit = h.checkout.join(".git");
        let before = std::fs::read_to_string(&dotgit).unwrap();
        attacks.push(Attack::new("the checkout's .git", "echo 'gitdir: /tmp' > .git".into(), move |_| {
            std::fs::read_to_string(&dotgit).unwrap() != before
        }));
        attacks
    });
}

#[test]
fn refs_of_the_parent_repository_cannot_move() {
    check(|h| {
        // A commit that exists only in another candidate's branch, to point main at.
        std::fs::write(h.other.join("g"), "two\n").unwrap();
        git_in(&h.other, &["add", "g"]);
        git_in(&h.other, &["commit", "-qm", "two"]);
        let two = git_in(&h.other, &["rev-parse", "HEAD"]);
        let moved = |h: &Home| {
            let (root, main, refs) = (h.root.clone(), h.main(), h.refs());
            move |_: &RunOutcome| {
                git_in(&root, &["rev-parse", "refs/heads/main"]) != main
                    || git_in(&root, &["for-each-ref", "--format=%(refname) %(objectname)"]) != refs
            }
        };
        vec![
            Attack::new(
                "git update-ref main from the checkout",
                format!("git update-ref refs/heads/main {two}"),
                moved(h),
            ),
            Attack::new(
                "git update-ref in the parent",
                format!("git -C {} update-ref refs/heads/main {two}", q(&h.root)),
                moved(h),
            ),
            Attack::new(
                "writing .git/refs directly",
                format!("echo {two} > {}/.git/refs/heads/main", q(&h.root)),
                moved(h),
            ),
            Attack::new("a new ref in the parent", format!("git -C {} tag planted {two}", q(&h.root)), moved(h)),
        ]
    });
}

#[test]
fn the_swarms_files_and_the_other_candidates_are_invisible() {
    check(|h| {
        let shows = |needle: &'static str| move |out: &RunOutcome| out.stdout.contains(needle);
        vec![
            Attack::new(
                "read state.json",
                format!("cat {}", q(&h.root.join("worktrees/.swarm/state.json"))),
                shows("state-9d2f"),
            ),
            Attack::new(
                "read the swarm's secret",
                format!("cat {}", q(&h.root.join("worktrees/.swarm/token"))),
                shows("swarm-secret-5b7e"),
            ),
            Attack::new(
                "read the host's /tmp",
                format!("cat {}", q(&h.outside.join("marker"))),
                shows("host-tmp-4c1a"),
            ),
            Attack::new("list another candidate", format!("ls {}", q(&h.other)), shows("f")),
        ]
    });
}

/// Hiding must hold against a command that tries to undo it: unmounting, remounting, or a user
/// namespace of its own (where it has capabilities, but the mounts it inherited are locked).
#[test]
fn what_is_hidden_cannot_be_unhidden() {
    check(|h| {
        let marker = q(&h.outside.join("marker"));
        let secret = q(&h.root.join("worktrees/.swarm/token"));
        let shows = |needle: &'static str| move |out: &RunOutcome| out.stdout.contains(needle);
        vec![
            Attack::new("umount /tmp", format!("umount -l /tmp 2>/dev/null; cat {marker}"), shows("host-tmp-4c1a")),
            Attack::new(
                "umount in an own user namespace",
                format!(
                    "unshare -Urm sh -c 'umount -l /tmp; umount -l {}; cat {marker} {secret}'",
                    q(&h.root.join("worktrees"))
                ),
                shows("swarm-secret-5b7e"),
            ),
            Attack::new(
                "remount the root writable",
                format!("mount -o remount,rw / 2>/dev/null; echo x > {}", q(&h.root.join("pwned"))),
                {
                    let p = h.root.join("pwned");
                    move |_| p.exists()
                },
            ),
            Attack::new("keep capabilities", "grep -q 'CapEff:.*[1-9a-f]' /proc/self/status".into(), |out| {
                out.success()
            }),
        ]
    });
}

/// Opening /proc/sysrq-trigger for writing needs no capability, only root's uid (and a write of
/// `b` reboots the machine): both sandboxes make it read-only. Only where the kernel has it.
#[test]
fn proc_sysrq_trigger_is_read_only() {
    if !Path::new("/proc/sysrq-trigger").exists() || !nix::unistd::getuid().is_root() {
        println!("note: skipped: no /proc/sysrq-trigger on this kernel, or not root");
        return;
    }
    check(|_| {
        vec![Attack::new("open /proc/sysrq-trigger for writing", ": > /proc/sysrq-trigger".into(), |out| out.success())]
    });
}

/// A sleeping process the attacks aim at, killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(Command::new("sleep").arg("300").spawn().expect("sleep runs"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn swarm_processes_can_be_neither_seen_nor_signalled() {
    let me = std::process::id();
    let control = Sleeper::start();
    let out =
        Home::new().run(SandboxMode::Plain, &format!("kill -0 {me} && kill -0 {} && ls /proc/{me}", control.pid()));
    assert!(out.success(), "control: plain can see and signal the swarm: {out:?}");
    for mode in confined() {
        let mut sleeper = Sleeper::start();
        let home = Home::new();
        let out = home.run(
            mode,
            &format!("kill -0 {me} || kill -0 {pid} || kill -KILL {pid} || [ -e /proc/{me} ]", pid = sleeper.pid()),
        );
        assert!(!out.success(), "{mode}: a swarm process was visible or signalled: {out:?}");
        assert!(sleeper.alive(), "{mode}: the command killed a process outside its sandbox");
        // Its own view: only itself and its descendants.
        let out = home.run(mode, "ls -d /proc/[0-9]* | wc -l");
        // (its sandbox's init, bubblewrap's reporting shim, the shell, ls and wc)
        let n: u32 = out.stdout.trim().parse().unwrap_or(999);
        assert!(n <= 5, "{mode}: the command sees {n} processes: {out:?}");
    }
}

/// Host pids of live processes whose command line contains `needle`.
fn running_with(needle: &str) -> Vec<i32> {
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// A command that starts processes meant to outlive it: `setsid`, `nohup` and a double fork, each
/// a `sleep` with a unique argument, and waits until each runs (it says so from inside).
fn leave_behind(tag: &str) -> String {
    format!(
        "(setsid sh -c 'touch .a-{tag}; exec sleep 301.{tag}' >/dev/null 2>&1 &); \
         nohup sh -c 'touch .b-{tag}; exec sleep 302.{tag}' >/dev/null 2>&1 & \
         (sh -c 'touch .c-{tag}; exec sleep 303.{tag}' >/dev/null 2>&1 &); \
         until [ -e .a-{tag} ] && [ -e .b-{tag} ] && [ -e .c-{tag} ]; do sleep 0.01; done"
    )
}

#[test]
fn nothing_a_command_starts_outlives_its_run() {
    let tag = format!("{}1", std::process::id());
    let out = Home::new().run(SandboxMode::Plain, &leave_behind(&tag));
    assert!(out.success(), "{out:?}");
    let left = running_with(&format!("301.{tag}"));
    kill_all(&left);
    assert!(!left.is_empty(), "control: a setsid child survives a plain run, so this test tests nothing");
    for (i, mode) in confined().into_iter().enumerate() {
        let tag = format!("{}{}", std::process::id(), i + 2);
        let out = Home::new().run(mode, &leave_behind(&tag));
        assert!(out.success(), "{mode}: {out:?}");
        let left: Vec<i32> = ["301", "302", "303"].iter().flat_map(|p| running_with(&format!("{p}.{tag}"))).collect();
        kill_all(&left);
        assert!(left.is_empty(), "{mode}: processes outlived the run: {left:?}");
    }
}

#[test]
fn no_host_socket_is_reachable_without_the_network() {
    let connect = |home: &Home, mode: SandboxMode| {
        let sock = home.outside.join("agent.sock");
        let unix = UnixListener::bind(&sock).expect("bind a unix socket");
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a tcp listener");
        let port = tcp.local_addr().unwrap().port();
        let unix_try = home.run(
            mode,
            &format!("perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Peer => $ARGV[0]) or exit 1' {}", q(&sock)),
        );
        let tcp_try = home.run(
            mode,
            &format!("perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => \"127.0.0.1:{port}\") or exit 1'"),
        );
        unix.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let heard = unix.accept().is_ok() || tcp.accept().is_ok();
        (unix_try, tcp_try, heard)
    };
    let home = Home::new();
    let (unix, tcp, heard) = connect(&home, SandboxMode::Plain);
    assert!(unix.success() && tcp.success() && heard, "control: plain reaches the host's sockets: {unix:?} {tcp:?}");
    for mode in confined() {
        let home = Home::new();
        let (unix, tcp, heard) = connect(&home, mode);
        assert!(!unix.success() && !tcp.success() && !heard, "{mode}: a host socket was reached: {unix:?} {tcp:?}");
    }
}

#[test]
fn the_checkout_stays_usable_inside() {
    // What a gate legitimately does: build in its checkout, use git read-only, use /tmp.
    for mode in confined() {
        let home = Home::new();
        let out = home.run(
            mode,
            "echo built > out.txt && git status --porcelain >/dev/null && git log --oneline -1 && \
             t=$(mktemp) && echo ok > \"$t\" && cat \"$t\" && [ \"$TMPDIR\" = /tmp ]",
        );
        assert!(out.success(), "{mode}: {out:?}");
        assert!(out.stdout.contains("one") && out.stdout.contains("ok"), "{mode}: {out:?}");
        assert_eq!(std::fs::read_to_string(home.checkout.join("out.txt")).unwrap(), "built\n");
    }
}

// ---------------------------------------------------------------------------------------------
// Through a real swarm

/// The attacks a candidate's test script makes, each reported as `ATTACK <name>: blocked|WORKED`;
/// the script always passes, so the candidate goes on to the critic's bite check (which runs it
/// again, in its own scratch checkout).
fn attack_script(t: &Target, me: u32, sleeper: u32, tag: &str) -> String {
    let root = t.path().display().to_string();
    let scratch = t.scratch().display().to_string();
    let attacks = [
        ("write-root", format!("echo x > {root}/pwned")),
        ("write-swarm", format!("echo x > {root}/worktrees/.swarm/pwned")),
        ("write-host-tmp", format!("echo x > {scratch}/pwned")),
        ("read-state", format!("cat {root}/worktrees/.swarm/state.json")),
        ("read-token", format!("cat {root}/worktrees/.swarm/token")),
        ("update-ref-checkout", "git update-ref refs/heads/main HEAD".to_string()),
        ("update-ref-parent", format!("git -C {root} update-ref refs/heads/main HEAD")),
        ("write-refs", format!("git rev-parse HEAD > {root}/.git/refs/heads/main")),
        ("signal-swarm", format!("kill -0 {me}")),
        ("kill-sleeper", format!("kill -KILL {sleeper}")),
    ];
    let mut s = String::from("#!/bin/sh\n# A candidate's test that attacks the swarm.\n");
    for (name, cmd) in attacks {
        s.push_str(&format!(
            "if ( {cmd} ) >/dev/null 2>&1; then echo 'ATTACK {name}: WORKED'; else echo 'ATTACK {name}: blocked'; fi\n"
        ));
    }
    s.push_str(&format!("(setsid sh -c 'exec sleep 311.{tag}' >/dev/null 2>&1 &)\n"));
    s.push_str(&format!("nohup sh -c 'exec sleep 312.{tag}' >/dev/null 2>&1 &\n"));
    s.push_str("exit 0\n");
    s
}

/// `tmp_in`: where the swarm's home lives (the host's /tmp is hidden whole, so a home elsewhere
/// tests the hiding of `worktrees/` and `.git` themselves).
fn swarm_attack(sandbox: &str, tmp_in: Option<PathBuf>) {
    let sleeper = Sleeper::start();
    let tag = format!("{}{}", std::process::id(), sandbox.len());
    // The target first, then its proposer: the attacks name the target's own paths.
    let mut t = Target::new(Spec { sandbox: sandbox.into(), tmp_in, ..Spec::default() });
    let script = attack_script(&t, std::process::id(), sleeper.pid(), &tag);
    let proposer_attacks = format!(
        "cat {root}/worktrees/.swarm/state.json > proposer-saw.txt 2>&1 || echo blocked > proposer-saw.txt\n\
         echo x > {root}/pwned-by-proposer 2>/dev/null; git -C {root} update-ref refs/heads/main HEAD 2>/dev/null\n",
        root = t.path().display()
    );
    let declared = ratchet_tests::fixture::declare(&["proposer-saw.txt", "tests/test_attack.sh"], &[], "an attack");
    let snippet = format!(
        "{declared}{proposer_attacks}cat > tests/test_attack.sh <<'ATTACK'\n{script}ATTACK\necho 'add an attacking test'"
    );
    t.spec.proposer = Proposer::Calls(vec![snippet]);
    t.write("cadence.md", &t.spec.cadence_md());
    t.git(&["commit", "-qam", "the attacking proposer"]);
    let out = t.ratchet(&["approve", "cadence.md", "--by", "test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let main = t.main();
    let run = t.up_once(&["--max-cycles", "1"], RUN);
    let s = &run.summary;

    // The candidate ran through the executor's gate and the critic's bite check: both saw every
    // attack blocked.
    let state = t.loop_state();
    let c = &state["finished"][0]["candidates"][0];
    let branch = c["branch"].as_str().unwrap_or_else(|| panic!("no candidate: {s:#}"));
    let gate_log =
        std::fs::read_to_string(t.path().join("worktrees").join(branch).join("artifacts/execute/gate-2.log"))
            .unwrap_or_else(|e| panic!("the gate's log: {e}: {c:#}"));
    let bite_log = std::fs::read_to_string(t.path().join("worktrees").join(branch).join("artifacts/critique/bite.log"))
        .unwrap_or_else(|e| panic!("the bite check's log: {e}: {c:#}"));
    for (who, log) in [("gate", &gate_log), ("bite check", &bite_log)] {
        assert!(log.matches("ATTACK ").count() >= 10, "{who}: every attack ran: {log}");
        assert!(!log.contains("WORKED"), "{who}: an attack worked: {log}");
        assert!(log.contains(&format!("sandbox {sandbox}")), "{who} ran in {sandbox}: {log}");
    }
    for gate in c["exec"]["gates"].as_array().expect("gates") {
        assert_eq!(gate["sandbox"], serde_json::json!({"mode": sandbox, "weak": false}), "{gate:#}");
    }
    let critiqued = read_jsonl(&t.path().join("worktrees").join(branch).join("events/events.jsonl"))
        .into_iter()
        .filter(|e| e["type"] == "critiqued")
        .collect::<Vec<Value>>();
    assert_eq!(critiqued.last().expect("critiqued")["sandbox"], serde_json::json!({"mode": sandbox, "weak": false}));
    // The proposer's program was confined too: its report is part of the candidate.
    let patch = c["proposal"]["patch"].as_str().unwrap_or_default();
    assert!(patch.contains("+blocked") && !patch.contains("agents"), "the proposer read state.json: {patch}");

    // Nothing moved, nothing was written, nothing survived.
    assert_eq!(t.main(), main, "{s:#}");
    for p in ["pwned", "pwned-by-proposer", "worktrees/.swarm/pwned"] {
        assert!(!t.path().join(p).exists(), "{p} was written");
    }
    assert!(!t.scratch().join("pwned").exists(), "the host's /tmp was written");
    let mut sleeper = sleeper;
    assert!(sleeper.alive(), "a candidate killed a process outside its sandbox");
    let left: Vec<i32> = ["311", "312"].iter().flat_map(|p| running_with(&format!("{p}.{tag}"))).collect();
    kill_all(&left);
    assert!(left.is_empty(), "processes a candidate started outlived the swarm's runs: {left:?}");
}

/// (The swarm's home in the host's /tmp.)
#[test]
fn a_candidate_attacking_from_its_tests_changes_nothing_under_bwrap() {
    if confined().contains(&SandboxMode::Bwrap) {
        swarm_attack("bwrap", None);
    }
}

/// (The swarm's home outside the host's /tmp.)
#[test]
fn a_candidate_attacking_from_its_tests_changes_nothing_under_namespaces() {
    swarm_attack("namespaces", Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR"))));
}

/// `ratchet sandbox --json` reports the modes and this repository's decision.
#[test]
fn ratchet_sandbox_reports_the_modes_and_the_decision() {
    let t = Target::new(Spec::default());
    let out = t.ratchet(&["sandbox", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let modes: Vec<&str> = report["modes"].as_array().unwrap().iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["bwrap", "namespaces", "plain"]);
    let namespaces = &report["modes"][1];
    assert!(namespaces["properties"].as_array().unwrap().iter().all(|p| p["holds"] == true), "{namespaces:#}");
    assert_ne!(report["auto"], "plain");
    assert_eq!(report["constitution"]["asked"], "auto");
    assert_eq!(report["constitution"]["weak"], false);
    assert!(report["constitution"]["refused"].is_null());
    let mut text = String::new();
    let mut child = t.command(&ratchet_tests::bin("ratchet"));
    let mut child =
        child.args(["sandbox", "--repo"]).arg(t.path()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    child.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(text.contains("own pid namespace") && text.contains("commands run in"), "{text}");
}
