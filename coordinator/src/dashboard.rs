//! The live dashboard's data: one [`Snapshot`] of the swarm at `home`, built from files and git
//! alone (the loop state, the branches' `meta.json`, leases and artefacts, the approvals, the
//! governance ref, `main`'s history). The web page (`web.rs`) renders it in the browser and
//! receives a new one over SSE whenever it changes.

use std::collections::BTreeMap;
use std::path::Path;

use kit::substrate::{BranchState, Home};
use protocol::work::Verdict;
use serde::Serialize;

use crate::engine::{Candidate, CycleState, LoopState, PromotionRecord, read_state};

/// How many finished cycles the page shows in full (candidates, artefacts); the chart shows all.
const CYCLES_SHOWN: usize = 30;
/// How many commits of `main` the lineage shows.
const LINEAGE: usize = 40;

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When it was taken (RFC 3339), and the same in milliseconds since the epoch (the page
    /// ages heartbeats from it).
    pub at: String,
    pub at_ms: u64,
    pub home: String,
    pub metric: Metric,
    /// `auto` or `approval` (cadence.md, approved).
    pub promotion_mode: String,
    pub run: Option<Run>,
    /// Every measured candidate, for the chart.
    pub points: Vec<Point>,
    /// `main`'s metric over the cycles: the baseline, then each promotion's.
    pub steps: Vec<Step>,
    /// The cycle in flight.
    pub current: Option<Cycle>,
    /// Finished cycles, newest first.
    pub cycles: Vec<Cycle>,
    pub lineage: Vec<Commit>,
    pub leases: Vec<Lease>,
    /// Every member and where it runs (host, engine, jobs), as `ratchet status` shows them.
    pub members: Vec<crate::supervisor::AgentStatus>,
    pub approvals: Vec<crate::approvals::Waiting>,
    pub governance: Option<crate::govern::GovernanceReport>,
    /// Why a part could not be read (the rest is still shown).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    /// `lower` or `higher` is better.
    pub direction: String,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub run_id: String,
    pub started_at: String,
    pub cycles_done: u64,
    pub promotions: usize,
    pub stalls: u32,
    pub proposal_failures: u32,
    pub stopped: Option<String>,
    pub stop_detail: Option<String>,
}

/// A candidate on the chart: its estimate of the metric with the interval, by verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub cycle: u64,
    /// Its place in the cycle (0-based), to spread a cycle's candidates apart.
    pub index: usize,
    pub of: usize,
    pub branch: String,
    pub summary: String,
    /// PROMOTED, AWAITING, PROMOTE (beaten by another of its cycle), HOLD, REJECT.
    pub verdict: String,
    /// The baseline's value in that evaluation, the candidate's estimate and its interval.
    pub baseline: Option<f64>,
    pub value: f64,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    pub line: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// From this cycle on, `main` is at `value`.
    pub cycle: u64,
    pub value: f64,
    pub commit: String,
    pub branch: Option<String>,
    /// `loop` or `human:<who>` for an approved promotion.
    pub by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cycle {
    pub cycle: u64,
    pub baseline: String,
    pub phase: crate::loop_state::Phase,
    pub started_at: String,
    pub candidates: Vec<CandidateView>,
    pub promoted: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CandidateView {
    pub branch: String,
    pub summary: String,
    pub approach: String,
    /// executing | critiquing | evaluating | decided
    pub stage: String,
    pub verdict: Option<Verdict>,
    /// The branch's state (`meta.json`): active, promoted, held, rejected, awaiting-approval, ...
    pub state: Option<String>,
    pub line: String,
    /// The line without verdict, branch and summary: the effect and why.
    pub detail: String,
    /// Where its running gate or evaluation is, in words (undecided candidates only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    /// Relative to the branch's `artifacts/`: `<task>/<name>`.
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Commit {
    pub commit: String,
    pub at: String,
    pub subject: String,
    /// The promotion that put it on main, when Ratchet did.
    pub promotion: Option<CommitPromotion>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommitPromotion {
    pub cycle: u64,
    pub branch: String,
    pub summary: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    pub by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lease {
    pub branch: String,
    pub task: String,
    /// The holder (`agent_id`), pid, host, token, claim and heartbeat age (at `at_ms`), as
    /// `ratchet inspect` reads them; for a remote member, `host` is the host it reported
    /// (`remote.json`; its lease file is the coordinator's).
    #[serde(flatten)]
    pub lease: kit::substrate::LeaseInfo,
    /// Where the holder runs: a remote member (see `host`), its engine and running jobs.
    pub remote: bool,
    pub engine: String,
    pub jobs: Vec<crate::supervisor::JobStatus>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The candidate's estimate in the metric's units from a relative change (positive = better).
fn at(baseline: f64, rel: f64, direction: &str) -> f64 {
    if direction == "higher" { baseline * (1.0 + rel) } else { baseline * (1.0 - rel) }
}

/// Everything the page shows, now.
pub fn snapshot(home: &Path) -> Snapshot {
    let mut problems = vec![];
    let gov = crate::govern::load(home).map_err(|e| problems.push(format!("governance: {e:#}"))).ok();
    let st = read_state(home).map_err(|e| problems.push(format!("loop state: {e:#}"))).ok().flatten();
    let h = Home::open(home).ok();
    let approvals = crate::approvals::waiting(home).unwrap_or_default();
    let governance = crate::govern::report(home).map_err(|e| problems.push(format!("governance report: {e:#}"))).ok();
    let (metric_name, direction) = gov
        .as_ref()
        .map(|g| (g.ethos.metric.clone(), format!("{:?}", g.ethos.direction).to_lowercase()))
        .unwrap_or_else(|| ("metric".into(), "lower".into()));
    let promotions = st.as_ref().map(|s| all_promotions(home, s)).unwrap_or_default();
    let states = |branch: &str| -> Option<BranchState> {
        h.as_ref()?.branch_dir(branch).ok()?.read_meta().ok().flatten().map(|m| m.state)
    };
    let mut points = vec![];
    let mut cycles = vec![];
    let mut current = None;
    if let Some(st) = &st {
        for cy in st.finished.iter().chain(st.current.iter()) {
            for (i, c) in cy.candidates.iter().enumerate() {
                if let Some(p) = point(cy, i, c, &promotions, &states, &metric_name, &direction) {
                    points.push(p);
                }
            }
        }
        let view = |cy: &CycleState| cycle_view(cy, h.as_ref(), &promotions, &states, &metric_name);
        current = st.current.as_ref().map(view);
        cycles = st.finished.iter().rev().take(CYCLES_SHOWN).map(view).collect();
    }
    let steps = st.as_ref().map(|s| steps(s, &promotions)).unwrap_or_default();
    let metric = Metric {
        name: metric_name,
        direction,
        baseline: st.as_ref().and_then(|s| s.baseline_metric),
        current: steps.last().map(|s| s.value),
    };
    let run = st.as_ref().map(|s| Run {
        run_id: s.run_id.clone(),
        started_at: s.started_at.clone(),
        cycles_done: s.cycles_done,
        promotions: promotions.len(),
        stalls: s.stalls,
        proposal_failures: s.proposal_failures,
        stopped: s.stopped.as_ref().map(|x| x.reason.clone()),
        stop_detail: s.stopped.as_ref().map(|x| x.detail.clone()),
    });
    let lineage = lineage(home, st.as_ref(), &promotions);
    let whereabouts = crate::supervisor::whereabouts(home);
    let leases = h.as_ref().map(|h| leases(h, &whereabouts)).unwrap_or_default();
    Snapshot {
        at: protocol::timestamp(std::time::SystemTime::now()),
        at_ms: now_ms(),
        home: home.display().to_string(),
        metric,
        promotion_mode: gov
            .as_ref()
            .map(|g| format!("{:?}", g.cadence.promotion).to_lowercase())
            .unwrap_or_else(|| "auto".into()),
        run,
        points,
        steps,
        current,
        cycles,
        lineage,
        leases,
        members: whereabouts.members,
        approvals,
        governance,
        problems,
    }
}

/// The run's promotions: the loop's own and those people approved, by cycle.
pub fn all_promotions(home: &Path, st: &LoopState) -> Vec<(PromotionRecord, String)> {
    let mut out: Vec<(PromotionRecord, String)> =
        st.promotions.iter().map(|p| (p.clone(), "loop".to_string())).collect();
    for a in crate::engine::approved_promotions(home) {
        if let Some(o) = out.iter_mut().find(|(p, _)| p.commit == a.commit) {
            o.1 = "a person".into();
        } else {
            out.push((a, "a person".into()));
        }
    }
    out.sort_by_key(|(p, _)| p.cycle);
    out
}

fn point(
    cy: &CycleState,
    i: usize,
    c: &Candidate,
    promotions: &[(PromotionRecord, String)],
    states: &impl Fn(&str) -> Option<BranchState>,
    metric: &str,
    direction: &str,
) -> Option<Point> {
    let e = c.eval.as_ref()?;
    let base = e.baseline_median;
    let value = match (base, e.effect) {
        (Some(b), Some(rel)) => at(b, rel, direction),
        _ => e.candidate_median?,
    };
    let (lo, hi) = match (base, crate::verdict::interval(c)) {
        (Some(b), Some((lo, hi))) => (lo.map(|r| at(b, r, direction)), hi.map(|r| at(b, r, direction))),
        _ => (None, None),
    };
    Some(Point {
        cycle: cy.cycle,
        index: i,
        of: cy.candidates.len(),
        branch: c.branch.clone(),
        summary: crate::verdict::summary(c),
        verdict: shown_verdict(c, promotions, states),
        baseline: base,
        value,
        lo,
        hi,
        line: crate::verdict::line(c, metric),
    })
}

/// The verdict as the page shows it: PROMOTED when it is on main, AWAITING while it waits for
/// a person, else the loop's verdict.
fn shown_verdict(
    c: &Candidate,
    promotions: &[(PromotionRecord, String)],
    states: &impl Fn(&str) -> Option<BranchState>,
) -> String {
    if promotions.iter().any(|(p, _)| p.branch == c.branch) {
        return Verdict::Promoted.to_string();
    }
    match states(&c.branch) {
        Some(BranchState::AwaitingApproval) => "AWAITING".into(),
        _ => c.verdict.map_or_else(|| c.stage.as_str().to_string(), |v| v.to_string()),
    }
}

fn steps(st: &LoopState, promotions: &[(PromotionRecord, String)]) -> Vec<Step> {
    let mut out = vec![];
    let first = st.finished.first().or(st.current.as_ref());
    let start = st.baseline_metric.or_else(|| promotions.first().and_then(|(p, _)| p.before));
    if let (Some(v), Some(cy)) = (start, first) {
        out.push(Step { cycle: cy.cycle, value: v, commit: cy.baseline.clone(), branch: None, by: "baseline".into() });
    }
    for (p, by) in promotions {
        if let Some(v) = p.after {
            out.push(Step {
                cycle: p.cycle,
                value: v,
                commit: p.commit.clone(),
                branch: Some(p.branch.clone()),
                by: by.clone(),
            });
        }
    }
    out
}

fn cycle_view(
    cy: &CycleState,
    h: Option<&Home>,
    promotions: &[(PromotionRecord, String)],
    states: &impl Fn(&str) -> Option<BranchState>,
    metric: &str,
) -> Cycle {
    Cycle {
        cycle: cy.cycle,
        baseline: cy.baseline.clone(),
        phase: cy.phase,
        started_at: cy.started_at.clone(),
        promoted: promotions.iter().find(|(p, _)| p.cycle == cy.cycle).map(|(p, _)| p.branch.clone()),
        candidates: cy
            .candidates
            .iter()
            .map(|c| CandidateView {
                branch: c.branch.clone(),
                summary: crate::verdict::summary(c),
                approach: c.proposal.approach_key(),
                stage: c.stage.as_str().to_string(),
                verdict: c.verdict,
                state: states(&c.branch).map(|s| s.as_str().to_string()),
                line: crate::verdict::line(c, metric),
                detail: crate::verdict::detail(c, metric),
                progress: h.filter(|_| c.verdict.is_none()).and_then(|h| progress(h, &c.branch)),
                artifacts: h.map(|h| artifacts(h, &c.branch)).unwrap_or_default(),
            })
            .collect(),
    }
}

/// The latest progress of the branch's tasks, in words.
fn progress(h: &Home, branch: &str) -> Option<String> {
    let bd = h.branch_dir(branch).ok()?;
    let latest = std::fs::read_dir(bd.artifacts_dir())
        .ok()?
        .flatten()
        .filter_map(|t| {
            let at = t.path().join(protocol::work::PROGRESS_FILE).metadata().and_then(|m| m.modified()).ok()?;
            Some((at, t.path()))
        })
        .max_by_key(|(at, _)| *at)?;
    kit::worker::read_progress(&latest.1).map(|p| crate::verdict::progress_words(&p))
}

fn artifacts(h: &Home, branch: &str) -> Vec<Artifact> {
    let Ok(bd) = h.branch_dir(branch) else { return vec![] };
    let mut out = vec![];
    let Ok(tasks) = std::fs::read_dir(bd.artifacts_dir()) else { return out };
    for t in tasks.flatten() {
        let task = t.file_name().to_string_lossy().to_string();
        let Ok(files) = std::fs::read_dir(t.path()) else {
            if let Ok(m) = t.metadata() {
                out.push(Artifact { path: task, bytes: m.len() });
            }
            continue;
        };
        for f in files.flatten() {
            if let Ok(m) = f.metadata()
                && m.is_file()
            {
                out.push(Artifact { path: format!("{task}/{}", f.file_name().to_string_lossy()), bytes: m.len() });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The live leases of every branch still in play.
fn leases(h: &Home, w: &crate::supervisor::Whereabouts) -> Vec<Lease> {
    let mut out = vec![];
    for branch in h.branches().unwrap_or_default() {
        let Ok(bd) = h.branch_dir(&branch) else { continue };
        let Ok(rd) = std::fs::read_dir(bd.leases_dir()) else { continue };
        for f in rd.flatten() {
            let p = f.path();
            if p.extension().and_then(|e| e.to_str()) != Some("lock") {
                continue;
            }
            let Some((task, mut lease)) = kit::substrate::read_lease_info(&p) else { continue };
            let member = w.members.iter().find(|m| m.name == lease.agent_id);
            let remote = member.is_some_and(|m| m.remote && m.pid.is_none());
            let running = |j: &crate::supervisor::JobStatus| matches!(j.state.as_str(), "RUNNING" | "PENDING");
            let jobs = crate::supervisor::jobs_of(&w.slurm_jobs, lease.pid).into_iter().filter(running).collect();
            if remote && let Some(m) = member {
                lease.host = m.host.clone();
            }
            let engine = member.map(|m| m.engine.clone()).unwrap_or_else(|| "local".into());
            out.push(Lease { branch: branch.clone(), task, lease, remote, engine, jobs });
        }
    }
    out
}

/// `main`'s recent history, newest first, each commit Ratchet promoted with its promotion.
fn lineage(home: &Path, st: Option<&LoopState>, promotions: &[(PromotionRecord, String)]) -> Vec<Commit> {
    let git = kit::git::Git::new(home);
    let n = LINEAGE.to_string();
    let Ok(out) = git.run(["log", "--first-parent", "-n", n.as_str(), "--format=%H%x09%cI%x09%s", "refs/heads/main"])
    else {
        return vec![];
    };
    let summaries: BTreeMap<String, String> = st
        .map(|s| {
            s.finished
                .iter()
                .flat_map(|cy| cy.candidates.iter())
                .map(|c| (c.branch.clone(), crate::verdict::summary(c)))
                .collect()
        })
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            let (commit, at, subject) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
            let promotion = promotions.iter().find(|(p, _)| p.commit == commit).map(|(p, by)| CommitPromotion {
                cycle: p.cycle,
                branch: p.branch.clone(),
                summary: summaries.get(&p.branch).cloned().unwrap_or_default(),
                before: p.before,
                after: p.after,
                by: by.clone(),
            });
            Some(Commit { commit: commit.to_string(), at: at.to_string(), subject: subject.to_string(), promotion })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use protocol::lease::TaskFile;

    /// The page reads a lease's `agent_id`, `task`, `branch`, `token` and `heartbeat_age_ms`.
    #[test]
    fn a_held_lease_shows_its_holder_task_and_heartbeat() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let git = kit::git::Git::new(tmp.path()).without_user_config().with_identity("t", "t@t");
        git.run(["init", "-q", "-b", "main"]).expect("git init");
        git.run(["commit", "-q", "--allow-empty", "-m", "base"]).expect("git commit");
        let base = git.run(["rev-parse", "HEAD"]).expect("rev-parse");
        let home = kit::substrate::Home::open(tmp.path())
            .expect("a repository")
            .with_git_env("GIT_CONFIG_GLOBAL", "/dev/null")
            .with_git_env("GIT_CONFIG_NOSYSTEM", "1");
        let bd = kit::substrate::add_worktree(&home, "b", &base).expect("a branch");
        let task = TaskFile {
            token: 0,
            ttl_ms: 60_000,
            ..TaskFile::queued("b", "t1", "executor", "execute", serde_json::json!({}))
        };
        kit::substrate::queue_task(&bd, &task).expect("queued");
        let _held = kit::substrate::try_claim(&bd, "t1", "executor-1").expect("claim").expect("claimable");
        let nowhere = crate::supervisor::Whereabouts { members: vec![], slurm_jobs: vec![] };
        let v = serde_json::to_value(super::leases(&home, &nowhere)).expect("serializes");
        let l = &v[0];
        assert_eq!(
            (&l["agent_id"], &l["task"], &l["branch"], &l["token"]),
            (&"executor-1".into(), &"t1".into(), &"b".into(), &0.into()),
            "{v:#}"
        );
        assert!(l["heartbeat_age_ms"].is_u64() && l["ttl_ms"] == 60_000, "{v:#}");
        assert_eq!(
            (&l["host"], &l["engine"], &l["remote"]),
            (&kit::substrate::hostname().into(), &"local".into(), &false.into())
        );
    }
}
