//! The `slurm` job backend on a real two-node Slurm cluster made of network namespaces
//! (`ratchet_tests::slurm`): the swarm runs in the controller's host, the gates and the benchmark
//! runs become Slurm job steps on the nodes.

use std::path::Path;
use std::time::{Duration, Instant};

use ratchet_tests::fixture::{Proposer, Spec, Target, of_type, read_jsonl};
use ratchet_tests::slurm::{Cluster, skip_reason};
use serde_json::Value;

const RUN: Duration = Duration::from_secs(240);

/// The fixture's constitution with a `[constitution.jobs]` table.
fn with_jobs(spec: &mut Spec, jobs: &str) {
    let text = spec.constitution_md().replacen("```\n", &format!("\n[constitution.jobs]\n{jobs}\n```\n"), 1);
    let text = match text.matches("```").count() {
        2 => text,
        _ => panic!("the fixture's constitution changed shape: {text}"),
    };
    spec.files.push(("constitution.md".into(), text));
}

fn accepted(root: &Path, branch: &str, task: &str) -> Vec<Value> {
    let dir = root.join(format!("worktrees/{branch}/results/accepted"));
    let mut out = vec![];
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{task}.")) {
            out.push(serde_json::from_slice(&std::fs::read(e.path()).expect("result")).expect("json"));
        }
    }
    out
}

/// Every branch's events of type `ty`.
fn branch_events(root: &Path, ty: &str) -> Vec<Value> {
    let mut out = vec![];
    for e in std::fs::read_dir(root.join("worktrees")).into_iter().flatten().flatten() {
        let log = e.path().join("events/events.jsonl");
        if log.is_file() {
            out.extend(of_type(&read_jsonl(&log), ty).into_iter().cloned());
        }
    }
    out
}

/// A member's pid (or the supervisor's, for `ratchet`) from `state.json`.
fn pid_of(root: &Path, name: &str) -> nix::unistd::Pid {
    let state: Value =
        serde_json::from_slice(&std::fs::read(root.join("worktrees/.swarm/state.json")).expect("state")).expect("json");
    let pid = if name == "ratchet" {
        state["supervisor_pid"].as_i64()
    } else {
        state["agents"].as_array().and_then(|a| a.iter().find(|a| a["name"] == name)).and_then(|a| a["pid"].as_i64())
    };
    nix::unistd::Pid::from_raw(pid.unwrap_or_else(|| panic!("no pid for {name} in {state:#}")) as i32)
}

/// Slurm states in which a job still holds its node.
fn live(state: &str) -> bool {
    ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"].contains(&state)
}

#[test]
fn gates_and_pinned_exclusive_benchmark_runs_are_slurm_jobs_with_their_ids_in_the_evidence() {
    if let Some(why) = skip_reason() {
        eprintln!("{why}");
        return;
    }
    let work = tempfile::Builder::new().prefix("ratchet-slurm-").tempdir().expect("temp dir");
    let cluster = Cluster::start(work.path());
    let mut spec = Spec {
        delay_ms: 300,
        candidates: 1,
        proposer: Proposer::Sweep(vec![("delay_ms".into(), vec!["300".into(), "100".into()])]),
        env: vec![("SLURM_CONF".into(), cluster.conf.display().to_string())],
        ..Spec::default()
    };
    // The benchmark refuses to measure unless it runs pinned to CPU 1 alone.
    let bench = ratchet_tests::fixture::bench_script(spec.quantum_ms).replacen(
        "\n",
        "\ngrep -q '^Cpus_allowed_list:[[:space:]]*1$' /proc/self/status || { echo \"not pinned: $(grep Cpus_allowed_list /proc/self/status)\" >&2; exit 3; }\n",
        1,
    );
    spec.files.push(("bench/bench.sh".into(), bench));
    with_jobs(&mut spec, "engine = \"slurm\"\npartition = \"debug\"\nexclusive_bench = true\nbench_cpu = 1");
    let t = Target::new(spec);
    let w = cluster.hosts.wrapper(0);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    let mut up = t.spawn_up_under(&w, &["--max-cycles", "1"]);
    let run = up.finish(RUN);
    assert!(run.status.success(), "{}\n{}", run.stderr, t.agent_logs());
    let promoted = run.list("promoted");
    assert_eq!(promoted.len(), 1, "{:#}\n{}", run.summary, t.agent_logs());
    let branch = promoted[0]["branch"].as_str().expect("branch");

    let jobs = cluster.jobs();
    let known = |id: &str| jobs.iter().find(|j| j.0 == id).cloned();
    // Every gate ran as a job on a node, its id in the execute result.
    let exec = accepted(t.path(), branch, "execute");
    let gates = exec[0]["data"]["gates"].as_array().expect("gates").clone();
    assert_eq!(gates.len(), 2, "{exec:#?}");
    for g in &gates {
        let id = g["job"]["id"].as_str().unwrap_or_else(|| panic!("a gate without a job: {g}"));
        assert_eq!(g["job"]["engine"], "slurm");
        let j = known(id).unwrap_or_else(|| panic!("job {id} is not in squeue: {jobs:?}"));
        assert_eq!(j.2, "COMPLETED", "{j:?}");
        assert!(["n1", "n2"].contains(&j.3.as_str()), "{j:?}");
        assert!(g["detail"].as_str().unwrap_or_default().contains(&format!("slurm job {id} on")), "{g}");
    }
    // Every benchmark run too, on a whole node, pinned (the benchmark checked its CPU).
    let eval = accepted(t.path(), branch, "evaluate");
    let runs = eval[0]["data"]["runs"].as_array().expect("runs").clone();
    assert!(runs.len() >= 10, "{eval:#?}");
    for r in &runs {
        let id = r["job"]["id"].as_str().unwrap_or_else(|| panic!("a benchmark run without a job: {r}"));
        assert!(known(id).is_some(), "job {id} is not in squeue: {jobs:?}");
    }
    let first = runs[0]["job"]["id"].as_str().expect("id");
    let shown = cluster.client(0, &["scontrol", "show", "job", first]);
    assert!(shown.contains("OverSubscribe=NO"), "an exclusive job: {shown}");
    assert!(jobs.len() >= gates.len() + runs.len(), "{jobs:?}");
    // Every job's record went with its job: none was left for the reaper to take for an orphan.
    let orphaned = branch_events(t.path(), "job_orphaned");
    assert!(orphaned.is_empty(), "jobs that ended normally were settled as orphans: {orphaned:#?}");
    let left: Vec<_> = std::fs::read_dir(t.path().join("worktrees"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|b| std::fs::read_dir(b.path().join("jobs")).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "job records left behind: {left:?}");
}

#[test]
fn a_lost_lease_cancels_its_slurm_job() {
    if let Some(why) = skip_reason() {
        eprintln!("{why}");
        return;
    }
    let work = tempfile::Builder::new().prefix("ratchet-slurm-").tempdir().expect("temp dir");
    let cluster = Cluster::start(work.path());
    let mut spec = Spec {
        candidates: 1,
        lease_ttl_s: 2,
        gates: vec!["sleep 60".into()],
        gate_timeout_s: 120,
        env: vec![("SLURM_CONF".into(), cluster.conf.display().to_string())],
        ..Spec::default()
    };
    with_jobs(&mut spec, "engine = \"slurm\"");
    let t = Target::new(spec);
    let w = cluster.hosts.wrapper(0);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    // No `ratchet check`: it would run the minute-long gate once first.
    let mut up = t.spawn_up_under(&w, &["--max-cycles", "1", "--no-check"]);
    // The gate is running as a job.
    let mut job = None;
    up.wait_until("the gate running as a Slurm job", RUN, |_| {
        job = cluster.jobs().into_iter().find(|j| j.2 == "RUNNING");
        job.is_some()
    });
    let (id, name, _, node) = job.expect("a running job");
    // `ratchet status` shows where the executor's job runs.
    let out = t.ratchet_under(&w, &["status", "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let exec = rows.iter().find(|r| r["name"] == "executor").unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(exec["engine"], "slurm", "{exec:#}");
    let jobs = exec["jobs"].as_array().cloned().unwrap_or_default();
    assert!(
        jobs.iter().any(|j| j["id"] == id.as_str() && j["state"] == "RUNNING" && j["node"] == node.as_str()),
        "{exec:#}"
    );
    // So does the dashboard, on the executor's lease and among the members.
    let (url, token) = {
        let state: Value =
            serde_json::from_slice(&std::fs::read(t.path().join("worktrees/.swarm/state.json")).expect("state"))
                .expect("json");
        let url = state["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["role"] == "coordinator"))
            .and_then(|a| a["url"].as_str())
            .expect("the coordinator's url")
            .trim_end_matches('/')
            .to_string();
        (url, std::fs::read_to_string(t.path().join("worktrees/.swarm/token")).expect("token").trim().to_string())
    };
    let snap: Value = cluster.hosts.on_host(0, move || {
        ratchet_tests::rt().block_on(async {
            let r = reqwest::Client::new().get(format!("{url}/ui/state")).bearer_auth(token).send().await;
            r.expect("the dashboard answers").json().await.expect("a snapshot")
        })
    });
    let lease = snap["leases"].as_array().and_then(|l| l.iter().find(|l| l["task"] == "execute")).cloned();
    let lease = lease.unwrap_or_else(|| panic!("no execute lease: {:#}", snap["leases"]));
    assert_eq!(lease["engine"], "slurm", "{lease:#}");
    assert_eq!(lease["host"], ratchet_tests::hostname(), "{lease:#}");
    let shown = lease["jobs"].as_array().cloned().unwrap_or_default();
    assert!(shown.iter().any(|j| j["id"] == id.as_str() && j["node"] == node.as_str()), "{lease:#}");
    let member = snap["members"].as_array().and_then(|m| m.iter().find(|m| m["name"] == "executor")).cloned();
    let member = member.unwrap_or_else(|| panic!("no executor member: {:#}", snap["members"]));
    assert!(member["jobs"].as_array().is_some_and(|j| j.iter().any(|j| j["id"] == id.as_str())), "{member:#}");
    // The executor hangs (SIGSTOP; its `srun` runs on): the coordinator expires its lease by
    // heartbeat, and its reaper cancels the job of the lease that is gone (by the job's record)
    // while the executor is still stopped, with a `job_orphaned` event.
    let exec = pid_of(t.path(), "executor");
    nix::sys::signal::kill(exec, nix::sys::signal::Signal::SIGSTOP).expect("stop the executor");
    up.wait_until("the hung executor's lease expired", Duration::from_secs(60), |root| {
        !branch_events(root, "lease_expired").is_empty()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = cluster.jobs().into_iter().find(|j| j.0 == id).map(|j| j.2);
        if state.as_deref() == Some("CANCELLED") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} ({name}) of the expired lease was not cancelled while its holder hung: {state:?}\n{}",
            t.agent_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let orphaned = branch_events(t.path(), "job_orphaned");
    let event = orphaned.iter().find(|e| e["job_id"] == id.as_str());
    let event = event.unwrap_or_else(|| panic!("no job_orphaned event for job {id}: {orphaned:#?}"));
    assert_eq!(
        (&event["cancelled"], &event["by"], &event["name"], &event["holder"]),
        (&true.into(), &"reaper".into(), &name.as_str().into(), &"executor".into()),
        "{event:#}"
    );
    assert!(event["reason"].as_str().unwrap_or_default().contains("is gone"), "{event:#}");
    // When it resumes, it finds its lease lost and stops (its own cancel finds the job ended).
    nix::sys::signal::kill(exec, nix::sys::signal::Signal::SIGCONT).expect("resume the executor");
}

/// An agent killed outright (SIGKILL: no code of it runs) leaves no job holding a node. Slurm's
/// side first, with the coordinator and the supervisor frozen so nothing of the swarm can act:
/// `srun` dies with its agent and ends the job. Then the swarm's side: the job's record, left
/// by the dead holder, becomes a `job_orphaned` event with the job's id.
#[test]
fn a_killed_agent_leaves_no_slurm_job_running() {
    if let Some(why) = skip_reason() {
        eprintln!("{why}");
        return;
    }
    let work = tempfile::Builder::new().prefix("ratchet-slurm-").tempdir().expect("temp dir");
    let cluster = Cluster::start(work.path());
    let mut spec = Spec {
        candidates: 1,
        // The log's header shows the command, its output the marker `gate-2-started`: once it
        // is there the job's task runs (not only its allocation).
        gates: vec!["echo gate-$((1+1))-started; sleep 120".into()],
        gate_timeout_s: 300,
        env: vec![("SLURM_CONF".into(), cluster.conf.display().to_string())],
        ..Spec::default()
    };
    with_jobs(&mut spec, "engine = \"slurm\"\ntime_limit_min = 10");
    let t = Target::new(spec);
    let w = cluster.hosts.wrapper(0);
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    let mut up = t.spawn_up_under(&w, &["--max-cycles", "1", "--no-check"]);
    let mut job = None;
    up.wait_until("the gate running as a Slurm job", RUN, |root| {
        job = cluster.jobs().into_iter().find(|j| j.2 == "RUNNING");
        job.is_some() && gate_log(root).contains("gate-2-started")
    });
    let (id, name, _, _) = job.expect("a running job");
    let records: Vec<_> = std::fs::read_dir(t.path().join("worktrees"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(format!("jobs/{name}.json")))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(records.len(), 1, "the running job has its record in its branch's jobs/");

    use nix::sys::signal::{Signal, kill};
    let (supervisor, coordinator) = (pid_of(t.path(), "ratchet"), pid_of(t.path(), "coordinator"));
    kill(supervisor, Signal::SIGSTOP).expect("freeze the supervisor");
    kill(coordinator, Signal::SIGSTOP).expect("freeze the coordinator");
    kill(pid_of(t.path(), "executor"), Signal::SIGKILL).expect("kill the executor");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut polls = 0;
    let ended = loop {
        polls += 1;
        let state = cluster.jobs().into_iter().find(|j| j.0 == id).map(|j| j.2).unwrap_or_default();
        if !live(&state) {
            break state;
        }
        if Instant::now() >= deadline {
            let _ = kill(coordinator, Signal::SIGCONT);
            let _ = kill(supervisor, Signal::SIGCONT);
            panic!("job {id} ({name}) of the killed executor still {state} after {polls} polls\n{}", t.agent_logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    kill(coordinator, Signal::SIGCONT).expect("thaw the coordinator");
    kill(supervisor, Signal::SIGCONT).expect("thaw the supervisor");
    // The swarm's side: the dead holder's record is settled (by the reaper, or by the
    // executor's successor at its start) into an event naming the job, which had ended.
    up.wait_until("the orphaned job's event", Duration::from_secs(60), |root| {
        branch_events(root, "job_orphaned").iter().any(|e| e["job_id"] == id.as_str())
    });
    let orphaned = branch_events(t.path(), "job_orphaned");
    let event = orphaned.iter().find(|e| e["job_id"] == id.as_str()).expect("found above");
    assert_eq!((&event["cancelled"], &event["name"]), (&false.into(), &name.as_str().into()), "{event:#}");
    assert_eq!(event["state"], ended.as_str(), "{event:#}");
    assert!(records.iter().all(|p| !p.exists()), "the record is removed once settled");
}

/// Every gate log of every branch, concatenated.
fn gate_log(root: &Path) -> String {
    let mut out = String::new();
    for b in std::fs::read_dir(root.join("worktrees")).into_iter().flatten().flatten() {
        for t in std::fs::read_dir(b.path().join("artifacts")).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(t.path()).into_iter().flatten().flatten() {
                if f.file_name().to_string_lossy().starts_with("gate-") {
                    out.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
                }
            }
        }
    }
    out
}

/// Duet pairing (both sides at once on one machine) cannot run as Slurm jobs (each side its own
/// job, possibly on another node): `ratchet calibrate` refuses it with the fix, before any job
/// (no cluster needed), and the loop stops at its calibration without charging a candidate.
#[test]
fn duet_pairing_on_slurm_is_refused_with_the_fix() {
    let mut spec = Spec { pairing: "duet".into(), calibration_rounds: 3, candidates: 1, ..Spec::default() };
    with_jobs(&mut spec, "engine = \"slurm\"");
    let t = Target::new(spec);
    let out = t.ratchet(&["calibrate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("pairing = \"duet\" runs both sides at once on one machine")
            && err.contains("engine = \"slurm\"")
            && err.contains("fix: set pairing = \"sequential\""),
        "{err}"
    );
    let mut up = t.spawn_up(&["--no-check"]);
    let run = up.finish(RUN);
    assert_eq!(run.stop_reason(), "calibration-failed", "{:#}\n{}", run.summary, run.stderr);
    assert!(
        run.summary["stop_detail"].as_str().unwrap_or_default().contains("runs both sides at once"),
        "{:#}",
        run.summary
    );
    assert!(of_type(&t.events(), "proposed").is_empty(), "nothing was proposed under settings that cannot run");
}
