//! Which sandbox modes work on this machine and what each one actually confines, measured by
//! running a probe command in each: `sandbox = "auto"` picks from this, and `ratchet sandbox`
//! shows it.
//!
//! The probe lays out a small swarm home in a temporary directory (a `.git`, a
//! `worktrees/.swarm/secret`, a checkout at `worktrees/b/tree`, a directory outside it and a
//! marker file), runs one shell script confined as a gate would be, and reads what the script could
//! do. Writes that succeed (in `plain` mode) land in that temporary directory only.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Confinement, Plan};
use crate::exec::SandboxMode;

/// The longest a probe may take before it counts as not working.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// One confinement property and whether the probe found it holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    pub name: String,
    pub holds: bool,
}

/// One mode on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeReport {
    pub mode: SandboxMode,
    /// The probe ran (the tool exists and could set up its namespaces).
    pub works: bool,
    /// Why it does not work, or which properties it lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub properties: Vec<Property>,
}

impl ModeReport {
    /// Works and every property holds.
    pub fn confines(&self) -> bool {
        self.works && self.properties.iter().all(|p| p.holds)
    }
}

/// Every mode on this machine, and what `auto` picks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    pub modes: Vec<ModeReport>,
    /// The first of bwrap and namespaces that confines fully, else plain.
    pub auto: SandboxMode,
}

impl SandboxReport {
    /// `auto` here means a mode that does not confine.
    pub fn auto_is_weak(&self) -> bool {
        self.auto.is_weak()
    }

    pub fn mode(&self, mode: SandboxMode) -> Option<&ModeReport> {
        self.modes.iter().find(|m| m.mode == mode)
    }

    /// One line per mode that does not confine, for messages: `bwrap: not installed; ...`.
    pub fn why_not_confined(&self) -> String {
        self.modes
            .iter()
            .filter(|m| m.mode != SandboxMode::Plain && !m.confines())
            .map(|m| format!("{}: {}", m.mode, m.problem.as_deref().unwrap_or("does not confine")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What a constitution's `sandbox` and `weak_sandbox` mean on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What the constitution asks (`auto`, `bwrap`, `namespaces` or `plain`).
    pub asked: SandboxMode,
    /// The mode commands run in here.
    pub mode: SandboxMode,
    /// That mode does not confine.
    pub weak: bool,
    /// Why commands would not run at all (a weak mode refused, or the mode asked for does not work
    /// here), with the fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl SandboxReport {
    /// Where commands run under `asked` (constitution.md `sandbox`) when a weak sandbox is allowed
    /// or not (`weak_sandbox`).
    pub fn decide(&self, asked: SandboxMode, allow_weak: bool) -> Decision {
        let mode = if asked == SandboxMode::Auto { self.auto } else { asked };
        let refused = if mode.is_weak() && !allow_weak {
            Some(format!(
                "{} does not confine commands and constitution.md has weak_sandbox = \"refuse\" ({}); fix: install bubblewrap (apt-get install bubblewrap) or enable unprivileged user namespaces, or set weak_sandbox = \"allow\" in constitution.md",
                if asked == SandboxMode::Auto { "auto falls back to plain here, which" } else { "plain" },
                if self.why_not_confined().is_empty() {
                    "chosen explicitly".to_string()
                } else {
                    self.why_not_confined()
                }
            ))
        } else {
            match self.mode(mode) {
                Some(m) if !m.works => Some(format!(
                    "constitution.md asks for sandbox = \"{mode}\", which does not work here ({}); fix: use sandbox = \"auto\" or install what it needs",
                    m.problem.as_deref().unwrap_or("unknown reason")
                )),
                _ => None,
            }
        };
        Decision { asked, mode, weak: mode.is_weak(), refused }
    }
}

/// The report for this process, probed once (a few tens of milliseconds the first time).
pub fn cached() -> &'static SandboxReport {
    static REPORT: OnceLock<SandboxReport> = OnceLock::new();
    REPORT.get_or_init(probe_sandbox)
}

/// Probes every mode now.
pub fn probe_sandbox() -> SandboxReport {
    let modes: Vec<ModeReport> =
        [SandboxMode::Bwrap, SandboxMode::Namespaces, SandboxMode::Plain].into_iter().map(probe_mode).collect();
    let auto =
        modes.iter().find(|m| m.mode != SandboxMode::Plain && m.confines()).map_or(SandboxMode::Plain, |m| m.mode);
    SandboxReport { modes, auto }
}

/// The names of the properties, in the order reported.
pub const PROPERTIES: [&str; 9] = [
    "read-only outside the checkout",
    "parent .git not writable",
    "swarm files hidden",
    "private /tmp",
    "own pid namespace",
    "own mount namespace",
    "own ipc namespace",
    "no network",
    "no capabilities",
];

fn probe_mode(mode: SandboxMode) -> ModeReport {
    let failed = |problem: String| ModeReport {
        mode,
        works: false,
        problem: Some(problem),
        properties: PROPERTIES.iter().map(|n| Property { name: n.to_string(), holds: false }).collect(),
    };
    let tmp = match tempfile::Builder::new().prefix("ratchet-sandbox-probe-").tempdir() {
        Ok(t) => t,
        Err(e) => return failed(format!("cannot create a temporary directory: {e}")),
    };
    let base = match tmp.path().canonicalize() {
        Ok(b) => b,
        Err(e) => return failed(format!("{}: {e}", tmp.path().display())),
    };
    let (home, outside, marker) = (base.join("home"), base.join("outside"), base.join("marker"));
    let checkout = home.join("worktrees/b/tree");
    let laid = [home.join(".git"), home.join("worktrees/.swarm"), checkout.clone(), outside.clone()]
        .iter()
        .try_for_each(std::fs::create_dir_all)
        .and_then(|()| std::fs::write(home.join("worktrees/.swarm/secret"), "secret"))
        .and_then(|()| std::fs::write(&marker, "marker"));
    if let Err(e) = laid {
        return failed(format!("cannot lay out the probe in {}: {e}", base.display()));
    }
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let script = format!(
        "w() {{ ( : > \"$1\" ) 2>/dev/null && echo yes || echo no; }}\n\
         echo checkout_writable=$(w ./probe)\n\
         echo outside_writable=$(w {outside}/probe)\n\
         echo git_writable=$(w {git}/probe)\n\
         echo swarm_readable=$(cat {secret} 2>/dev/null || echo no)\n\
         echo tmp_visible=$([ -e {marker} ] && echo yes || echo no)\n\
         for ns in pid mnt ipc net; do echo ns_$ns=$(readlink /proc/self/ns/$ns); done\n\
         echo caps=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)\n",
        outside = q(&outside),
        git = q(&home.join(".git")),
        secret = q(&home.join("worktrees/.swarm/secret")),
        marker = q(&marker),
    );
    let plan = match Plan::build(&Confinement { repository: Some(&home), ..Confinement::new(&checkout) }) {
        Ok(p) => p,
        Err(e) => return failed(e.to_string()),
    };
    let argv = match crate::exec::sandbox_argv(mode, &plan, None, &script) {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let out = match run_with_deadline(&argv, &checkout) {
        Ok(o) => o,
        Err(e) => return failed(e),
    };
    let values: BTreeMap<&str, &str> = out.stdout.lines().filter_map(|l| l.split_once('=')).collect();
    if !out.success || values.get("checkout_writable") != Some(&"yes") {
        let why = out.stderr.lines().next().unwrap_or("no output").to_string();
        return failed(format!("the probe did not run: {why}"));
    }
    let ours = |ns: &str| {
        std::fs::read_link(format!("/proc/self/ns/{ns}")).map(|p| p.display().to_string()).unwrap_or_default()
    };
    let own_ns = |ns: &str| values.get(format!("ns_{ns}").as_str()).is_some_and(|v| !v.is_empty() && *v != ours(ns));
    let holds = [
        values.get("outside_writable") == Some(&"no"),
        values.get("git_writable") == Some(&"no"),
        values.get("swarm_readable") == Some(&"no"),
        values.get("tmp_visible") == Some(&"no"),
        own_ns("pid"),
        own_ns("mnt"),
        own_ns("ipc"),
        own_ns("net"),
        values.get("caps").is_some_and(|c| c.chars().all(|ch| ch == '0') && !c.is_empty()),
    ];
    let properties: Vec<Property> =
        PROPERTIES.iter().zip(holds).map(|(n, holds)| Property { name: n.to_string(), holds }).collect();
    let lacking: Vec<&str> = properties.iter().filter(|p| !p.holds).map(|p| p.name.as_str()).collect();
    let problem = (!lacking.is_empty()).then(|| format!("lacks: {}", lacking.join(", ")));
    ModeReport { mode, works: true, problem, properties }
}

struct ProbeOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `argv` in `cwd` (own process group, minimal environment), killed after [`PROBE_TIMEOUT`].
fn run_with_deadline(argv: &[std::ffi::OsString], cwd: &Path) -> Result<ProbeOutput, String> {
    use std::io::Read as _;
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start `{}`: {e}", argv[0].to_string_lossy()))?;
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() > deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("waiting for the probe: {e}")),
        }
    };
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let Some(status) = status else {
        let _ = child.wait();
        return Err(format!("the probe did not finish within {PROBE_TIMEOUT:?}"));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut stderr);
    }
    Ok(ProbeOutput { success: status.success(), stdout, stderr })
}

/// `ratchet sandbox` for people: each mode, what it confines, what `auto` picks here and what
/// `decision` (this repository's approved constitution, when there is one) makes of it.
pub fn render(report: &SandboxReport, decision: Option<&Decision>) -> String {
    let mut out = String::from("sandbox modes on this machine (probed now):\n");
    for m in &report.modes {
        let state = if m.confines() {
            "confines".to_string()
        } else if m.works && m.mode.is_weak() {
            "weak: rlimits, the timeout and the group kill only".to_string()
        } else if m.works {
            format!("weak: {}", m.problem.as_deref().unwrap_or("does not confine"))
        } else {
            format!("does not work: {}", m.problem.as_deref().unwrap_or("unknown"))
        };
        out.push_str(&format!("  {:<11} {state}\n", m.mode.as_str()));
    }
    out.push_str(&format!("\n{:<32}", "what each confines"));
    for m in &report.modes {
        out.push_str(&format!(" {:>10}", m.mode.as_str()));
    }
    out.push('\n');
    for (i, name) in PROPERTIES.iter().enumerate() {
        out.push_str(&format!("  {name:<30}"));
        for m in &report.modes {
            let cell = match m.properties.get(i) {
                _ if !m.works => "-",
                Some(p) if p.holds => "yes",
                _ => "NO",
            };
            out.push_str(&format!(" {cell:>10}"));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "\nsandbox = \"auto\" picks: {}{}\n",
        report.auto,
        if report.auto_is_weak() { " (weak)" } else { "" }
    ));
    match decision {
        None => {
            out.push_str("no approved constitution.md here: run `ratchet init` to make this repository a swarm home\n")
        }
        Some(d) => match &d.refused {
            Some(why) => out.push_str(&format!("this repository's commands would be REFUSED: {why}\n")),
            None => out.push_str(&format!(
                "this repository's approved constitution.md (sandbox = \"{}\"): commands run in {}{}\n",
                d.asked,
                d.mode,
                if d.weak { ", which does not confine them (weak_sandbox = \"allow\")" } else { "" }
            )),
        },
    }
    out
}
