//! The operator's view (issue 14), with the real binaries on real repositories: a misconfigured
//! repository stops before any candidate with the fix named; a promotion waiting for a person is
//! one state (status, governance, inspect, the web page; approve and reject, from the command line
//! and the page); waiting is not a stall; the proposer's program is told summaries, reasons and
//! numbers; long gates and evaluations say where they are; `ratchet up` leaves no zombie behind;
//! and the dashboard in a real browser.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ratchet_tests::bin;
use ratchet_tests::fixture::{Proposer, Spec, Target, UpRun, declare};
use serde_json::Value;

const RUN: Duration = Duration::from_secs(240);

fn text(out: &std::process::Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The candidate branches the loop made (`r<run>-c<cycle>-<i>` directories).
fn candidate_dirs(t: &Target) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(t.path().join("worktrees")) else { return vec![] };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('r') && n.contains("-c"))
        .collect()
}

/// `ratchet up --once` on a repository with one configuration error: it exits 2 before any
/// candidate, naming the file, the problem and the fix.
fn refused(spec: Spec, env: &[(&str, &str)], wants: &[&str]) {
    let t = Target::new(spec);
    let mut cmd = t.command(&bin("ratchet"));
    cmd.args(["up", "--once", "--repo"]).arg(t.path()).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("ratchet up runs");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "stdout: {stdout}\nstderr: {stderr}");
    for w in wants {
        assert!(stderr.contains(w), "{w:?} missing from:\n{stderr}");
    }
    assert!(stderr.contains("fix:") && stderr.contains("the loop did not start"), "{stderr}");
    assert!(candidate_dirs(&t).is_empty(), "a candidate was made: {:?}", candidate_dirs(&t));
    let events = t.events();
    assert!(!events.iter().any(|e| e["type"] == "proposed" || e["type"] == "cycle_started"), "{events:#?}");
    // `ratchet check` says the same on its own (exit 2), and `--json` is a report.
    let out = t.ratchet(&["check", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let r: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(r["ok"], false, "{r:#}");
    assert!(r["items"].as_array().unwrap().iter().any(|i| i["status"] == "error" && i["fix"].is_string()), "{r:#}");
}

#[test]
fn a_misconfigured_repository_stops_before_any_candidate_with_the_fix() {
    // A gate that is not there: exit 127, not the candidates' fault.
    refused(
        Spec { gates: vec!["scripts/test".into()], ..Spec::default() },
        &[],
        &["gate 1 (ethos.md gates[0])", "`scripts/test`: command not found (exit 127"],
    );
    // The coding agent's variable the command strategy needs is unset.
    refused(
        Spec { proposer: Proposer::Command("${RATCHET_CODING_AGENT:?set it} < /dev/null".into()), ..Spec::default() },
        &[],
        &["proposer", "RATCHET_CODING_AGENT, which is not set", "set RATCHET_CODING_AGENT"],
    );
    // Set, but to a program that does not exist.
    refused(
        Spec { proposer: Proposer::Command("${RATCHET_CODING_AGENT:?set it}".into()), ..Spec::default() },
        &[("RATCHET_CODING_AGENT", "surely-not-a-coding-agent -p")],
        &["`surely-not-a-coding-agent`, which is not on PATH"],
    );
    // A benchmark whose output holds no metric.
    refused(
        Spec {
            benchmark: "sh bench/words.sh".into(),
            files: vec![("bench/words.sh".into(), "#!/bin/sh\necho 'it took a while'\n".into())],
            ..Spec::default()
        },
        &[],
        &["benchmark (ethos.md", "metric `ms`"],
    );
}

/// The coordinator's URL in the running swarm's state.json, once it is there.
fn coordinator_url(root: &Path) -> Option<String> {
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("worktrees/.swarm/state.json")).ok()?).ok()?;
    let url = state["agents"].as_array()?.iter().find(|a| a["role"] == "coordinator")?["url"].as_str()?;
    Some(url.trim_end_matches('/').to_string())
}

/// The coordinator's URL and the swarm's token, from the running swarm's files.
fn coordinator(root: &Path) -> (String, String) {
    let url = coordinator_url(root).expect("a coordinator url");
    let token = std::fs::read_to_string(root.join("worktrees/.swarm/token")).unwrap().trim().to_string();
    (url, token)
}

fn http(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    ratchet_tests::rt().block_on(async {
        let c = reqwest::Client::new();
        let mut r = if method == "POST" { c.post(url) } else { c.get(url) };
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.expect("the coordinator answers");
        (resp.status().as_u16(), resp.text().await.unwrap_or_default())
    })
}

fn meta_state(root: &Path, branch: &str) -> Option<String> {
    let p = kit::layout::Layout::new(root).branch_dir(branch).join("meta.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    v["state"].as_str().map(String::from)
}

/// The branch of cycle `cycle`'s first candidate once it waits for approval.
fn waiting_in(root: &Path, cycle: u64) -> Option<String> {
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("worktrees/.swarm/loop.json")).ok()?).ok()?;
    let cycles = st["finished"].as_array().cloned().unwrap_or_default();
    let cy = cycles.iter().chain(st["current"].as_object().map(|_| &st["current"])).find(|c| c["cycle"] == cycle)?;
    let b = cy["candidates"][0]["branch"].as_str()?.to_string();
    (meta_state(root, &b).as_deref() == Some("awaiting-approval")).then_some(b)
}

/// The zombies among `pid`'s children.
fn zombie_children(pid: i32) -> Vec<String> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(pid) {
            out.push(head.to_string() + ")");
        }
    }
    out
}

fn ratchet_up_serving(t: &Target) -> UpRun {
    let mut cmd: Command = t.command(&bin("ratchet"));
    // --json: the progress goes to stderr, which the test reads as it comes.
    cmd.args(["up", "--json", "--repo"]).arg(t.path());
    UpRun::spawn_cmd(cmd, t.path())
}

/// Cut the benchmark's delay to `ms`, with `summary` as the proposal's summary.
fn set_delay(ms: u32, summary: &str) -> String {
    params(&format!("sed -i 's/^delay_ms = .*/delay_ms = {ms}/' params.toml\necho '{summary}'"))
}

/// `script`, an edit of params.toml, declared as such (constitution.md blocks undeclared scope).
fn params(script: &str) -> String {
    declare(&["params.toml"], &[], "a change of params.toml") + script
}

#[test]
fn a_waiting_promotion_is_one_state_everywhere_and_a_person_decides_it() {
    let t = Target::new(Spec {
        promotion: "approval".into(),
        // Waiting is not a stall: with a limit of 1 the loop would stop after the first cycle.
        stall_limit: 1,
        breaker_limit: 2,
        max_cycles: 8,
        proposer: Proposer::Calls(vec![set_delay(200, "cut the delay to 200"), set_delay(100, "cut the delay to 100")]),
        ..Spec::default()
    });
    let base = t.main();
    let mut up = ratchet_up_serving(&t);
    let mut b1 = String::new();
    up.wait_until("cycle 1's PROMOTE waiting for approval", RUN, |root| waiting_in(root, 1).map(|b| b1 = b).is_some());
    // status, governance, inspect and the web page all say it waits, and how to decide.
    let (status, _) = text(&t.ratchet(&["status"]));
    assert!(
        status.contains("1 promotion(s) awaiting approval") && status.contains(&format!("ratchet approve {b1}")),
        "{status}"
    );
    assert!(status.contains("cut the delay to 200"), "the approach by its summary: {status}");
    let (gov, _) = text(&t.ratchet(&["governance"]));
    assert!(gov.contains("promotion awaiting approval (cycle 1)") && gov.contains(&b1), "{gov}");
    let (inspect, _) = text(&t.ratchet(&["inspect", &b1]));
    assert!(inspect.contains("state awaiting-approval"), "{inspect}");
    let (url, token) = coordinator(t.path());
    let (code, body) = http("GET", &format!("{url}/ui/state"), Some(&token));
    assert_eq!(code, 200, "{body}");
    let snap: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(snap["approvals"][0]["branch"], b1.as_str(), "{:#}", snap["approvals"]);
    assert_eq!(snap["promotion_mode"], "approval");
    // The page reads without acting: an action needs the token itself.
    let (code, _) = http("POST", &format!("{url}/ui/reject/{b1}"), None);
    assert_eq!(code, 401);

    // A person rejects it: main stays, the branch says so, the approach is banned.
    let out = t.ratchet(&["reject", &b1, "--by", "alice"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(meta_state(t.path(), &b1).as_deref(), Some("rejected"));
    assert_eq!(t.main(), base);
    let out = t.ratchet(&["approve", &b1, "--by", "alice"]);
    let (_, err) = text(&out);
    assert!(!out.status.success() && err.contains("is rejected, not awaiting approval"), "{err}");

    // The loop went on (waiting was not a stall); the next PROMOTE waits; the web page approves it.
    let mut b2 = String::new();
    up.wait_until("cycle 2's PROMOTE waiting for approval", RUN, |root| waiting_in(root, 2).map(|b| b2 = b).is_some());
    let (code, body) = http("POST", &format!("{url}/ui/approve/{b2}"), Some(&token));
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with(&format!("promoted {b2}: main ")), "{body}");
    assert_eq!(meta_state(t.path(), &b2).as_deref(), Some("promoted"));
    assert_ne!(t.main(), base, "main moved to the approved candidate");
    let (status, _) = text(&t.ratchet(&["status"]));
    assert!(status.contains("no promotion awaiting approval"), "{status}");

    // The loop stops by itself (the proposer has nothing more), never as stalled; the run counts
    // the approved promotion, its history the rejection with who decided it.
    up.wait_until("the loop stopped", RUN, |root| {
        std::fs::read_to_string(root.join("worktrees/.swarm/loop.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|s| s["stopped"].is_object())
    });
    let st = t.loop_state();
    assert_eq!(st["stopped"]["reason"], "circuit-breaker", "{:#}", st["stopped"]);
    assert_eq!(st["promotions"][0]["branch"], b2.as_str(), "{:#}", st["promotions"]);
    let rejected = st["tried"].as_array().unwrap().iter().find(|x| x["summary"] == "cut the delay to 200").cloned();
    let rejected = rejected.expect("the rejected approach in the history");
    assert_eq!(rejected["verdict"], "REJECT", "{rejected:#}");
    assert!(rejected["reason"].as_str().unwrap().contains("alice"), "{rejected:#}");
    let events = t.events();
    assert!(events.iter().any(|e| e["type"] == "promotion_rejected" && e["by"] == "alice"), "{events:#?}");
    // The swarm keeps serving and says how to stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !up.stderr().contains("the swarm keeps serving") {
        assert!(std::time::Instant::now() < deadline, "no hint on how to stop:\n{}", up.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up.stderr().contains("ratchet: the loop stopped: circuit-breaker"), "{}", up.stderr());
    // No zombie: the orphans of the agents' commands were reaped as they ended.
    let zombies = zombie_children(up.pid());
    assert!(zombies.is_empty(), "ratchet up left zombie children: {zombies:?}");
}

/// What the `command` strategy's program reads on stdin, after a promotion, a hold, a failure
/// and a dropped answer: every attempt by its summary with its outcome, reason and numbers.
#[test]
fn the_proposers_program_is_told_summaries_reasons_and_numbers() {
    let t = Target::new(Spec {
        breaker_limit: 2,
        stall_limit: 5,
        proposer: Proposer::Calls(vec![
            set_delay(100, "halve the delay"),
            params("sed -i 's/^label = .*/label = \"renamed\"/' params.toml\necho 'rename the label'"),
            params("sed -i 's/^delay_ms = .*/delay_ms = fast/' params.toml\necho 'make the delay a word'"),
            // The same change as the first: already on main, so nothing changes.
            set_delay(100, "halve the delay again"),
            "cat > \"$HOME/briefing.md\"\necho 'nothing more' >&2\nexit 1".into(),
        ]),
        ..Spec::default()
    });
    let run = t.up_once(&[], RUN);
    assert_eq!(run.stop_reason(), "circuit-breaker", "{}", run.stderr);
    let brief = std::fs::read_to_string(t.path().join("worktrees/.swarm/agents/proposer/home/briefing.md"))
        .unwrap_or_else(|e| panic!("the program saved no briefing ({e}):\n{}", run.stderr));
    for want in [
        "`ms` (lower is better)",
        "The baseline (main at ",
        "measures 100",
        "the run started at 300",
        "Promoted onto main",
        "\"halve the delay\": ms 300.0 -> 100.0 (",
        "% better)",
        "Held",
        "\"rename the label\"",
        "Rejected",
        "\"make the delay a word\": execute",
        "Dropped before it became a candidate",
        "empty diff",
        "# Banned approaches",
        "- \"make the delay a word\" (failed in cycle 3",
    ] {
        assert!(brief.contains(want), "{want:?} missing from the briefing:\n{brief}\n---\n{}", run.stderr);
    }
    assert!(!brief.contains("command:"), "a bare approach key reached the program:\n{brief}");
    // The progress said the drop too, and every verdict line names the approach by its summary.
    assert!(run.stderr.contains("dropped \"") && run.stderr.contains("empty diff"), "{}", run.stderr);
    assert!(run.stderr.contains("\"rename the label\""), "{}", run.stderr);

    // The commands around it speak to people.
    // `export pairs` with nothing to pair says why (the promotion and the failure have different
    // baselines), and prints no pair.
    let out = t.ratchet(&["export", "pairs"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success() && stdout.trim().is_empty(), "{stdout}\n{stderr}");
    assert!(stderr.contains("no preference pairs: 1 promotion(s) and 1 rejected candidate(s)"), "{stderr}");
    // `explain` renders the diagnosis in words, not JSON.
    let (explain, _) = text(&t.ratchet(&["explain", "main"]));
    let diagnosis = explain.lines().find(|l| l.trim_start().starts_with("diagnosis:")).expect("a diagnosis line");
    assert!(!diagnosis.contains('{') && diagnosis.len() > "  diagnosis: -".len(), "{explain}");
    // `gc` sums up what it did in a few lines (the whole report behind --json).
    let (gc, _) = text(&t.ratchet(&["gc"]));
    assert!(!gc.contains("GcReport") && !gc.contains('{') && gc.lines().count() <= 8, "{gc}");
    assert!(gc.contains("archived") || gc.contains("removed"), "{gc}");
    // A reader that went away is no reason to panic: `explain --json` into a closed pipe.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = t
        .command(&bin("ratchet"))
        .args(["explain", "main", "--json", "--repo"])
        .arg(t.path())
        .stdout(writer)
        .output()
        .expect("ratchet runs");
    let (_, stderr) = text(&out);
    assert!(out.status.success() && !stderr.contains("panicked"), "{:?}: {stderr}", out.status);
}

/// `ratchet up` in a directory that is no swarm home says how to make one.
#[test]
fn up_without_configuration_points_to_init() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::new(bin("ratchet")).args(["up", "--once", "--repo"]).arg(dir.path()).output().expect("ratchet runs");
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("run `ratchet init`"), "{stderr}");
}

/// The dashboard in Debian's Chromium, against a real run: the banner shows the waiting
/// promotion, approving it from the page puts it on the chart, a new cycle appears without a
/// reload. `tests/run` installs the browser route and sets `RATCHET_BROWSER_DIR`; without it the
/// test says so and returns. `RATCHET_SCREENSHOTS=<dir>` keeps the screenshots.
#[test]
fn the_dashboard_in_a_real_browser() {
    let Some(browser_dir) = std::env::var_os("RATCHET_BROWSER_DIR").map(PathBuf::from) else {
        eprintln!(
            "RATCHET_BROWSER_DIR is not set (tests/run sets it after tests/browser/install): browser test not run"
        );
        return;
    };
    let t = Target::new(Spec {
        promotion: "approval".into(),
        stall_limit: 6,
        max_cycles: 8,
        proposer: Proposer::Calls(vec![
            set_delay(200, "cut the delay to 200"),
            params("sed -i 's/^label = .*/label = \"one\"/' params.toml\necho 'rename the label once'"),
            params("sed -i 's/^label = .*/label = \"two\"/' params.toml\necho 'rename the label twice'"),
            params("sed -i 's/^label = .*/label = \"three\"/' params.toml\necho 'rename the label thrice'"),
            params("sed -i 's/^label = .*/label = \"four\"/' params.toml\necho 'rename the label again'"),
        ]),
        ..Spec::default()
    });
    let mut up = ratchet_up_serving(&t);
    let mut b1 = String::new();
    up.wait_until("cycle 1's PROMOTE waiting for approval", RUN, |root| waiting_in(root, 1).map(|b| b1 = b).is_some());
    let (url, token) = coordinator(t.path());
    let shots = std::env::var_os("RATCHET_SCREENSHOTS").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let dir = shots.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let opts = serde_json::json!({
        "url": url, "token": token, "browser_dir": browser_dir, "timeout_ms": 120000, "screenshots": dir,
        "steps": [
            {"banner": b1},
            {"screenshot": "dashboard-approval"},
            {"approve": b1},
            {"promotions": 1},
            {"new_cycle": true},
            {"screenshot": "dashboard"},
            {"screenshot": "dashboard-chart", "element": "#chart"},
            {"branch_page": b1, "screenshot_branch": "branch"},
        ],
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard.mjs");
    let out = Command::new("node").arg(&script).arg(opts.to_string()).output().expect("node runs");
    let (stdout, stderr) = text(&out);
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("null"))
        .unwrap_or_else(|_| panic!("the browser script printed no result: {stdout}\n{stderr}"));
    assert!(out.status.success() && seen["ok"] == true, "{seen:#}\n{stderr}\n{}", up.stderr());
    let s = &seen["seen"];
    assert!(s["banner"].as_str().unwrap().contains("cut the delay to 200"), "{s:#}");
    assert_eq!(s["promoted_points"], 1, "{s:#}");
    assert_eq!(s["promotion_markers"], 1, "{s:#}");
    assert_eq!(s["chart_branches"][0], b1.as_str(), "{s:#}");
    assert!(s["later_cycle"].as_u64() > s["first_cycle"].as_u64(), "{s:#}");
    assert_eq!(s["mark_kept"], true, "the page was reloaded: {s:#}");
    assert_eq!(s["navigations"], 1, "{s:#}");
    assert_eq!(s["token_in_address"], false, "the token stays out of the address bar: {s:#}");
    assert!(s["action_result"].as_str().unwrap().starts_with(&format!("promoted {b1}")), "{s:#}");
    assert!(
        s["branch_page"].as_str().unwrap().contains("awaiting")
            || s["branch_page"].as_str().unwrap().contains("promoted"),
        "{s:#}"
    );
    for f in ["dashboard-approval.png", "dashboard.png", "dashboard-chart.png", "branch.png"] {
        assert!(dir.join(f).is_file(), "no screenshot {f}");
    }
}

/// The dashboard shows where each member runs, a member on another host included: the remote
/// executor (its own home, `RATCHET_COORDINATOR_URL`, `RATCHET_HOST=far-host`) holds the
/// candidate's execute task while its gate waits, and the page shows the lease on far-host and
/// the member on far-host, remote, beside the local members on this host.
#[test]
fn the_dashboard_shows_where_a_remote_member_runs() {
    let Some(browser_dir) = std::env::var_os("RATCHET_BROWSER_DIR").map(PathBuf::from) else {
        eprintln!(
            "RATCHET_BROWSER_DIR is not set (tests/run sets it after tests/browser/install): browser test not run"
        );
        return;
    };
    let mut agents = String::new();
    for name in ["coordinator", "proposer", "critic", "evaluator"] {
        agents.push_str(&format!(
            "[[agent]]\nname = {name:?}\nrole = {name:?}\ncommand = [{:?}]\n\n",
            bin(name).display().to_string()
        ));
    }
    let t = Target::new(Spec {
        gates: vec!["sh check.sh".into(), "sh gate-wait.sh".into()],
        files: vec![("gate-wait.sh".into(), WAITING_GATE.into())],
        proposer: Proposer::sweep("delay_ms", &["300", "100"]),
        max_cycles: 1,
        agents_toml: Some(agents),
        ..Spec::default()
    });
    // No `ratchet check`: with no local executor its gates run on the baseline here first.
    let mut cmd: Command = t.command(&bin("ratchet"));
    cmd.args(["up", "--json", "--no-check", "--repo"]).arg(t.path());
    let mut up = UpRun::spawn_cmd(cmd, t.path());
    // The coordinator's own url: another member's may be written first.
    up.wait_until("the coordinator", RUN, |root| coordinator_url(root).is_some_and(|u| u.starts_with("http://")));
    let (url, token) = coordinator(t.path());
    let far = tempfile::tempdir().unwrap();
    let _exec = ratchet_tests::spawn_agent(
        "executor",
        far.path(),
        &[
            ("RATCHET_TOKEN", &token),
            ("RATCHET_COORDINATOR_URL", &url),
            ("RATCHET_HOST", "far-host"),
            ("RATCHET_AGENT_NAME", "exec-far"),
        ],
    );
    let mut branch = String::new();
    up.wait_until("the remote executor holding the execute task", RUN, |root| {
        let st: Option<Value> = std::fs::read_to_string(root.join("worktrees/.swarm/loop.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let Some(b) = st.and_then(|s| s["current"]["candidates"][0]["branch"].as_str().map(String::from)) else {
            return false;
        };
        branch = b;
        far.path().join(format!("worktrees/{branch}/tree/gate-wait.sh")).is_file()
            && kit::layout::Layout::new(root).branch_dir(&branch).join("leases/execute.lock").is_file()
    });
    let opts = serde_json::json!({
        "url": url, "token": token, "browser_dir": browser_dir, "timeout_ms": 60000,
        "steps": [{"where": {"member": "exec-far", "host": "far-host", "lease": true}}],
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard.mjs");
    let out = Command::new("node").arg(&script).arg(opts.to_string()).output().expect("node runs");
    let (stdout, stderr) = text(&out);
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("null"))
        .unwrap_or_else(|_| panic!("the browser script printed no result: {stdout}\n{stderr}"));
    // The gate may go on now: the loop ends on its own.
    std::fs::write(kit::layout::Layout::new(far.path()).branch_dir(&branch).join("tree/.go"), "").unwrap();
    assert!(out.status.success() && seen["ok"] == true, "{seen:#}\n{stderr}\n{}", up.stderr());
    let s = &seen["seen"];
    let lease = s["lease_where"].as_str().unwrap_or_default();
    assert!(lease.starts_with("far-host (remote)") && lease.contains("local"), "{s:#}");
    assert!(s["member_where"].as_str().unwrap_or_default().starts_with("far-host (remote)"), "{s:#}");
    let here = ratchet_tests::hostname();
    let members: Vec<&str> = s["members"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for name in ["coordinator", "proposer", "critic", "evaluator"] {
        assert!(
            members.iter().any(|m| m.starts_with(&format!("{name} {name} {here} "))),
            "{name} on {here}: {members:#?}"
        );
    }
}

/// A gate that passes at once on the baseline and, on the candidate (delay_ms = 100), waits for
/// the test's go: a file `.go` in the candidate's checkout.
const WAITING_GATE: &str = "#!/bin/sh\ngrep -q '^delay_ms = 100' params.toml || exit 0\n\
while [ ! -f .go ]; do sleep 0.05; done\n";

/// A long gate and an evaluation say where they are: the progress names the gate running (and
/// the dashboard shows it on the candidate), and the evaluator's last word is the rounds it ran
/// of its cap with the estimate.
#[test]
fn long_stages_say_where_they_are() {
    let t = Target::new(Spec {
        gates: vec!["sh check.sh".into(), "sh gate-wait.sh".into()],
        files: vec![("gate-wait.sh".into(), WAITING_GATE.into())],
        proposer: Proposer::sweep("delay_ms", &["300", "100"]),
        max_cycles: 1,
        ..Spec::default()
    });
    let mut up = ratchet_up_serving(&t);
    let mut branch = String::new();
    up.wait_until("the candidate's branch", RUN, |root| {
        let st: Option<Value> = std::fs::read_to_string(root.join("worktrees/.swarm/loop.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        st.and_then(|s| s["current"]["candidates"][0]["branch"].as_str().map(|b| branch = b.to_string())).is_some()
    });
    let want = format!("{branch} execute: gate 2 of 2 (`sh gate-wait.sh`)");
    let deadline = std::time::Instant::now() + RUN;
    while !up.stderr().contains(&want) {
        assert!(std::time::Instant::now() < deadline, "no {want:?} in:\n{}", up.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The gate is still waiting: the dashboard shows where the candidate is.
    let (url, token) = coordinator(t.path());
    let (code, body) = http("GET", &format!("{url}/ui/state"), Some(&token));
    assert_eq!(code, 200, "{body}");
    let snap: Value = serde_json::from_str(&body).unwrap();
    let c = &snap["current"]["candidates"][0];
    assert_eq!(c["progress"], "gate 2 of 2 (`sh gate-wait.sh`)", "{c:#}");
    std::fs::write(kit::layout::Layout::new(t.path()).branch_dir(&branch).join("tree/.go"), "").unwrap();
    up.wait_until("the loop stopped", RUN, |root| {
        std::fs::read_to_string(root.join("worktrees/.swarm/loop.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|s| s["stopped"].is_object())
    });
    let st = t.loop_state();
    let cand = &st["finished"][0]["candidates"][0];
    assert_eq!(cand["verdict"], "PROMOTE", "{cand:#}\n{}", up.stderr());
    let rounds = cand["eval"]["sampling"]["rounds"].as_u64().expect("rounds");
    let progress: Value = serde_json::from_str(
        &std::fs::read_to_string(
            kit::layout::Layout::new(t.path()).branch_dir(&branch).join("artifacts/evaluate/progress.json"),
        )
        .expect("the evaluator's progress file"),
    )
    .unwrap();
    assert_eq!(progress["step"], "round", "{progress:#}");
    assert_eq!(progress["done"].as_u64(), Some(rounds), "{progress:#}");
    assert_eq!(progress["of"], 10, "the cap is ethos.md max_rounds: {progress:#}");
    assert!(progress["estimate"].as_f64().is_some_and(|e| e > 0.5), "300 ms -> 100 ms is better: {progress:#}");
}

/// A benchmark whose first run in a checkout fails, then works: a cold start.
const COLD_BENCH: &str = "#!/bin/sh\n# Fails the first time in a checkout (a cold start), then measures like the fixture's.\n\
[ -f .warm ] || { touch .warm; echo 'cold cache' >&2; exit 1; }\nexec sh bench/bench.sh\n";

/// The diagnosis of a cold start recommends more warmup rounds: without an approved bound the
/// loop proposes the cadence.md edit and keeps the approved warmup; with `max_warmup` it raises
/// warmup itself, within the bound, and says so.
#[test]
fn self_adjustment_stays_within_what_was_approved() {
    for bound in [0, 2] {
        let mut spec = Spec {
            benchmark: "sh bench/cold.sh".into(),
            proposer: Proposer::sweep("delay_ms", &["300", "100"]),
            max_cycles: 1,
            ..Spec::default()
        };
        spec.files.push(("bench/cold.sh".into(), COLD_BENCH.into()));
        if bound > 0 {
            let cadence = spec.cadence_md().replacen("warmup = 0\n", &format!("warmup = 0\nmax_warmup = {bound}\n"), 1);
            spec.files.push(("cadence.md".into(), cadence));
        }
        let t = Target::new(spec);
        // The pre-loop check would stop at the cold benchmark: this test is about the loop.
        let run = t.up_once(&["--no-check"], RUN);
        let events = t.events();
        let evaluated: Vec<&Value> = events.iter().filter(|e| e["type"] == "evaluated").collect();
        assert!(!evaluated.is_empty(), "{}", run.stderr);
        let diagnosis = evaluated[0]["stats"]["diagnosis"].to_string();
        assert!(diagnosis.contains("warmup"), "no cold start diagnosed: {diagnosis}\n{}", run.stderr);
        let adjusted: Vec<&Value> = events.iter().filter(|e| e["type"] == "setting_adjusted").collect();
        let proposed: Vec<&Value> = events.iter().filter(|e| e["type"] == "governance_proposed").collect();
        let overrides = &t.loop_state()["overrides"];
        if bound == 0 {
            assert!(adjusted.is_empty(), "the approved warmup was overridden: {adjusted:#?}");
            assert_eq!(overrides["warmup"], Value::Null, "{overrides:#}");
            assert_eq!(proposed.len(), 1, "{events:#?}");
            let id = proposed[0]["id"].as_str().unwrap();
            let (gov, _) = text(&t.ratchet(&["governance"]));
            assert!(gov.contains(id) && gov.contains("warmup 0 -> ") && gov.contains("+warmup = "), "{gov}");
            assert!(run.stderr.contains(&format!("ratchet approve {id}")), "{}", run.stderr);
            // Approving it is a governance approval like any other.
            let out = t.ratchet(&["approve", id, "--by", "alice"]);
            assert!(out.status.success(), "{:?}", text(&out));
            assert!(t.read("cadence.md").contains("\nwarmup = 1\n"), "{}", t.read("cadence.md"));
        } else {
            assert_eq!(adjusted.len(), 1, "{events:#?}");
            assert!(adjusted[0]["reason"].as_str().unwrap().contains("max_warmup = 2"), "{:#}", adjusted[0]);
            let to = adjusted[0]["to"].as_u64().unwrap();
            assert!((1..=2).contains(&to), "{:#}", adjusted[0]);
            assert_eq!(overrides["warmup"].as_u64(), Some(to), "{overrides:#}");
            assert!(proposed.is_empty(), "{proposed:#?}");
        }
    }
}
