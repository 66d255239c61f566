//! The job backend of [`crate::exec`]: where a command executes. `local` is a child process of
//! the agent (everything `kit::exec` describes); `slurm` runs the very same sandboxed command line
//! (`bwrap ...`/`ratchet-sandbox ...`/`sh -c`) as a Slurm job step through `srun`, which blocks
//! while the step runs and carries its stdout, stderr and exit code back, so timeouts, logs and
//! the candidate-vs-infrastructure classification stay those of a local run.
//!
//! Each job is named `ratchet-<pid>-<n>`: after the run its id and node are read back
//! (`squeue --states=all`, which shows a finished job for the cluster's `MinJobAge`) into the
//! evidence; a run that times out or whose future is dropped (a canceled task, a lost lease) is
//! cancelled by name (`scancel --name`), since killing `srun` alone leaves the job running.
//!
//! What a job may ask for comes from approved governance only (`[constitution.jobs]`): the
//! partition, a time limit, and for benchmark runs a whole node (`--exclusive`) with the run
//! pinned to one CPU (`--cpu-bind=map_cpu:N`). The agent's `SLURM_CONF` (when set) names the
//! cluster; it is passed to `srun` and to nothing else.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use protocol::governance::{JobEngine, JobSettings};
use protocol::work::JobRecord;

/// One run's job on an engine other than `local`.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub settings: JobSettings,
    /// A benchmark run: `exclusive_bench` and `bench_cpu` apply.
    pub bench: bool,
}

impl JobSpec {
    /// The job for `settings`, `None` for the local engine.
    pub fn for_settings(settings: &JobSettings, bench: bool) -> Option<JobSpec> {
        (settings.engine != JobEngine::Local).then(|| JobSpec { settings: settings.clone(), bench })
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A unique job name for this process.
pub(crate) fn job_name() -> String {
    format!("ratchet-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The `srun` words that run `argv` as a job step named `name` in `cwd`, with a memory limit.
pub(crate) fn srun_argv(
    job: &JobSpec,
    name: &str,
    cwd: &Path,
    memory_mb: Option<u64>,
    argv: Vec<OsString>,
) -> Vec<OsString> {
    let s = &job.settings;
    // One task on one node (srun's default task count: an explicit `--ntasks=1` would limit an
    // exclusive step to one CPU, and a pinned CPU outside it fails).
    let mut out: Vec<OsString> = vec!["srun".into(), "--quiet".into(), "--nodes=1".into()];
    out.push(format!("--job-name={name}").into());
    let mut chdir = OsString::from("--chdir=");
    chdir.push(cwd.as_os_str());
    out.push(chdir);
    if let Some(p) = &s.partition {
        out.push(format!("--partition={p}").into());
    }
    if let Some(t) = s.time_limit_min {
        out.push(format!("--time={t}").into());
    }
    if let Some(mb) = memory_mb {
        out.push(format!("--mem={mb}M").into());
    }
    // A pinned CPU needs the node's CPUs in the step: pinning implies a whole node.
    if job.bench && (s.exclusive_bench || s.bench_cpu.is_some()) {
        out.push("--exclusive".into());
    }
    if job.bench
        && let Some(cpu) = s.bench_cpu
    {
        out.push(format!("--cpu-bind=map_cpu:{cpu}").into());
    }
    out.push("--".into());
    out.extend(argv);
    out
}

/// The variables `srun` needs from the agent's environment to find its cluster.
pub(crate) fn srun_env() -> Vec<(String, String)> {
    ["SLURM_CONF"].iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))).collect()
}

fn slurm_command(program: &str) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    c
}

/// The job's id and node, read back by its name.
pub(crate) async fn record(name: &str) -> Option<JobRecord> {
    let mut c = tokio::process::Command::from(slurm_command("squeue"));
    c.args(["-h", "--states=all", &format!("--name={name}"), "-o", "%i %N"]).kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), c.output()).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    let mut words = line.split_whitespace();
    let id = words.next()?.to_string();
    Some(JobRecord { engine: JobEngine::Slurm, id, node: words.next().unwrap_or_default().to_string() })
}

/// Cancels the job by name (blocking; quick: one request to the controller).
pub(crate) fn cancel(name: &str) {
    let mut c = slurm_command("scancel");
    c.arg(format!("--name={name}"));
    match c.status() {
        Ok(st) if st.success() => tracing::info!("cancelled Slurm job {name}"),
        Ok(st) => tracing::warn!("scancel --name={name}: {st}"),
        Err(e) => tracing::warn!("scancel --name={name}: {e}"),
    }
}

/// Cancels the job when dropped while armed (a timeout, a dropped run future).
pub(crate) struct CancelOnDrop {
    pub name: String,
    pub armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            cancel(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_runs_ask_for_an_exclusive_node_and_a_pinned_cpu_only_when_governance_says_so() {
        let settings = JobSettings {
            engine: JobEngine::Slurm,
            partition: Some("quiet".into()),
            time_limit_min: Some(5),
            exclusive_bench: true,
            bench_cpu: Some(1),
        };
        let words = |bench| {
            let job = JobSpec::for_settings(&settings, bench).expect("slurm");
            srun_argv(&job, "ratchet-1-0", Path::new("/w"), Some(64), vec!["sh".into(), "-c".into(), "true".into()])
                .into_iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            words(true),
            "srun --quiet --nodes=1 --job-name=ratchet-1-0 --chdir=/w --partition=quiet --time=5 --mem=64M \
             --exclusive --cpu-bind=map_cpu:1 -- sh -c true"
        );
        assert_eq!(
            words(false),
            "srun --quiet --nodes=1 --job-name=ratchet-1-0 --chdir=/w --partition=quiet --time=5 --mem=64M -- sh -c true"
        );
        assert!(JobSpec::for_settings(&JobSettings::default(), true).is_none(), "local runs are no job");
    }
}
