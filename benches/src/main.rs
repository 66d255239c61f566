//! `wire-bench`: the A2A wire, measured (issue 2). Not a test: it prints a markdown table and
//! writes it into BENCHMARKS.md's "## Wire (issues 2 and 12)" section with the command and the date.
//!
//! Five servers, each its own process on 127.0.0.1 started the same way (the bench spawns it
//! and reads the `... LISTENING <url>` line it prints), in both A2A versions:
//! - bare axum: this binary re-run as `wire-bench --bare-server`, a current-thread axum app
//!   that answers every POST with a canned JSON-RPC response: no parsing, no storage. The floor.
//! - Ratchet: a real agent binary (`target/release/critic` by default), on its built-in
//!   `status` skill: parse, validate, persist the task to disk, run it, answer; one process asked
//!   in A2A 0.3 (`message/send`), one in 1.0 (`SendMessage` with `A2A-Version: 1.0`).
//! - Python: `tests/interop/echo_agent.py` on the official `a2a-sdk` 0.3 server side and
//!   `tests/interop/echo_agent_v1.py --minimal` on the 1.x one (uvicorn), run with the interop
//!   virtualenvs' pythons (`tests/interop/setup-venvs` makes them).
//!
//! For each: process start to first 200 on the Agent Card (median of N starts), idle RSS and
//! idle CPU after a warm-up, `message/send` (blocking, one text part) round trips on one
//! keep-alive connection (p50, p99; interleaved across the servers in rounds), server CPU per
//! request (the server's threads' on-CPU time from /proc, across its timed rounds).
//! Then the whole swarm: all five agent binaries started at once, time until every card answers.
//!
//! Reproduce: `tests/interop/setup-venvs && cargo build --release --workspace --bins && target/release/wire-bench`
//! Options: `--requests N` (2000), `--starts N` (10), `--swarm-runs N` (5), `--agent NAME`
//! (critic), `--home-in DIR` (where the agents' temporary home goes: `worktrees/.wire-bench/`),
//! `--no-write` (print only).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use ratchet_bench::report::{loadavg, write_section};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const AGENTS: [&str; 5] = ["proposer", "executor", "critic", "evaluator", "coordinator"];
const WARMUP: usize = 200;
const SECTION: &str = "## Wire (issues 2 and 12)";
const REPRODUCE: &str =
    "tests/interop/setup-venvs && cargo build --release --workspace --bins && target/release/wire-bench";
const DEADLINE: Duration = Duration::from_secs(60);
const IDLE_WINDOW: Duration = Duration::from_secs(3);
/// The timed requests are split into this many rounds, interleaved across the servers.
const ROUNDS: usize = 10;

/// The floor's answer to every POST: a completed task, shaped like a real one.
const CANNED: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"kind":"task","id":"t-1","contextId":"c-1","status":{"state":"completed","message":{"kind":"message","role":"agent","messageId":"m-2","parts":[{"kind":"text","text":"ping"}]},"timestamp":"2026-01-01T00:00:00.000Z"},"history":[{"kind":"message","role":"user","messageId":"m-1","parts":[{"kind":"text","text":"ping"}]}]}}"#;

struct Opts {
    requests: usize,
    starts: usize,
    swarm_runs: usize,
    agent: String,
    home_in: Option<PathBuf>,
    write: bool,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let mut o = Opts { requests: 2000, starts: 10, swarm_runs: 5, agent: "critic".into(), home_in: None, write: true };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> anyhow::Result<usize> {
            let v = args.next().with_context(|| format!("{name} needs a number"))?;
            let n: usize = v.parse().with_context(|| format!("{name} {v:?} is not a number"))?;
            if n == 0 {
                bail!("{name} must be at least 1");
            }
            Ok(n)
        };
        match a.as_str() {
            "--requests" => o.requests = num("--requests")?,
            "--starts" => o.starts = num("--starts")?,
            "--swarm-runs" => o.swarm_runs = num("--swarm-runs")?,
            "--agent" => o.agent = args.next().context("--agent needs an agent binary name, e.g. critic")?,
            "--home-in" => o.home_in = Some(args.next().context("--home-in needs a directory")?.into()),
            "--no-write" => o.write = false,
            other => bail!(
                "unknown argument {other:?}; use --requests N, --starts N, --swarm-runs N, --agent NAME, --home-in DIR, --no-write"
            ),
        }
    }
    Ok(o)
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--bare-server") {
        return bare_server();
    }
    if std::env::args().nth(1).as_deref() == Some("--drive") {
        return drive();
    }
    let opts = parse_opts()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    rt.block_on(bench(opts))
}

/// The floor: bind, announce, answer the card and every POST with canned bytes.
fn bare_server() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding 127.0.0.1:0")?;
        let url = format!("http://{}/", listener.local_addr().context("reading the bound address")?);
        let card = Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "protocolVersion": "0.3.0", "name": "bare-axum", "description": "canned floor",
                "url": url, "preferredTransport": "JSONRPC", "version": "0", "capabilities": {},
                "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"], "skills": [],
            }))
            .context("serializing the card")?,
        );
        let card_route = get(move || {
            let c = card.clone();
            async move { ([(CONTENT_TYPE, "application/json")], c) }
        });
        let app = Router::new()
            .route("/.well-known/agent-card.json", card_route.clone())
            .route("/.well-known/agent.json", card_route)
            .route("/", post(|_body: Bytes| async { ([(CONTENT_TYPE, "application/json")], CANNED) }));
        println!("RATCHET_LISTENING {url}");
        axum::serve(listener, app).await.context("serving")
    })
}

/// `wire-bench --drive URL VERSION N`: only the client side, for a profiler attached to a server
/// started by hand (`benches/callgrind-wire.sh`): `N` blocking sends in A2A `VERSION` (`0.3` or
/// `1.0`), the bodies and headers of the timed rounds, on one keep-alive connection, each answer
/// checked to be a completed task.
fn drive() -> anyhow::Result<()> {
    let usage = "usage: wire-bench --drive URL VERSION N (VERSION 0.3 or 1.0)";
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [url, version, n] = args.as_slice() else { bail!("{usage}") };
    let proto = match version.as_str() {
        "0.3" => Proto::V03,
        "1.0" => Proto::V1,
        other => bail!("version {other:?}: {usage}"),
    };
    let n: usize = n.parse().with_context(|| format!("N {n:?} is not a number: {usage}"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    rt.block_on(async {
        let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(1).build().context("http client")?;
        let mut times = round_trips(&http, url, n, proto).await?;
        times.sort();
        eprintln!("wire-bench: {n} sends to {url} in A2A {version}: p50 {:?}", percentile(&times, 50.0));
        Ok(())
    })
}

/// The bearer token the Ratchet agents under test require (as `ratchet up` would hand them one).
const BENCH_TOKEN: &str = "ratchet-wire-bench-token";

/// How to start one server.
#[derive(Clone)]
struct Spec {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

/// Which A2A generation a target's requests speak.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    /// `message/send`, no `A2A-Version` header.
    V03,
    /// `SendMessage` with `A2A-Version: 1.0`.
    V1,
}

struct Proc {
    child: Child,
    pid: u32,
    url: String,
}

impl Proc {
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Spawn `spec`, wait for its listening line, then poll its card until the first 200. Returns
/// the running process and the time from just before spawn to that first 200.
async fn start(spec: &Spec, http: &reqwest::Client) -> anyhow::Result<(Proc, Duration)> {
    let t0 = Instant::now();
    let mut child = Command::new(&spec.program)
        .args(&spec.args)
        .env_remove("RATCHET_TOKEN")
        .env_remove("RATCHET_OPEN")
        .envs(spec.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))?;
    let pid = child.id().context("the child has a pid")?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(i) = line.find("LISTENING http://") {
                return Ok(line[i + "LISTENING ".len()..].trim().to_string());
            }
        }
        bail!("{} exited before printing its LISTENING line", spec.program.display())
    })
    .await
    .with_context(|| format!("{} did not print its LISTENING line within {DEADLINE:?}", spec.program.display()))??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let card = format!("{url}.well-known/agent-card.json");
    loop {
        if let Ok(r) = http.get(&card).send().await
            && r.status() == 200
            && r.bytes().await.is_ok()
        {
            break;
        }
        if t0.elapsed() > DEADLINE {
            bail!("{card} did not answer 200 within {DEADLINE:?}");
        }
        tokio::task::yield_now().await;
    }
    Ok((Proc { child, pid, url }, t0.elapsed()))
}

/// A blocking send of one text part that names the `status` skill in its metadata (an echo agent
/// ignores that and echoes the text back).
fn send_body(i: usize, proto: Proto) -> Vec<u8> {
    match proto {
        Proto::V03 => format!(
            r#"{{"jsonrpc":"2.0","id":{i},"method":"message/send","params":{{"message":{{"kind":"message","role":"user","messageId":"bench-{i}","parts":[{{"kind":"text","text":"ping"}}],"metadata":{{"skill":"status"}}}},"configuration":{{"blocking":true}}}}}}"#
        ),
        Proto::V1 => format!(
            r#"{{"jsonrpc":"2.0","id":{i},"method":"SendMessage","params":{{"message":{{"role":"ROLE_USER","messageId":"bench-{i}","parts":[{{"text":"ping"}}],"metadata":{{"skill":"status"}}}}}}}}"#
        ),
    }
    .into_bytes()
}

/// `n` blocking send round trips on one keep-alive connection; every answer must be a completed
/// task (checked outside the timed region).
async fn round_trips(http: &reqwest::Client, url: &str, n: usize, proto: Proto) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    let (done, version): (&[u8], &str) = match proto {
        Proto::V03 => (b"\"completed\"", "0.3"),
        Proto::V1 => (b"\"TASK_STATE_COMPLETED\"", "1.0"),
    };
    for i in 0..n {
        let body = send_body(i, proto);
        let t = Instant::now();
        // Every server gets the token; only Ratchet's checks it (the others ignore the header).
        let resp = http
            .post(url)
            .header("content-type", "application/json")
            .header("A2A-Version", version)
            .bearer_auth(BENCH_TOKEN)
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        times.push(t.elapsed());
        let completed = bytes.windows(done.len()).any(|w| w == done);
        if status != 200 || !completed {
            bail!("{url}: request {i} did not complete: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
    }
    Ok(times)
}

/// Time `pid` has spent on a CPU, all its threads, in nanoseconds: the first field of each
/// `/proc/<pid>/task/<tid>/schedstat`. (utime+stime in `/proc/<pid>/stat` counts 10 ms ticks:
/// too coarse for CPU per request measured over interleaved rounds.)
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = entry.with_context(|| format!("reading {dir}"))?.path().join("schedstat");
        // A thread that exited since the listing has nothing more to add.
        let Ok(stat) = std::fs::read_to_string(&path) else { continue };
        total += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(total)
}

/// CPU time this thread has used, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// What one task file costs the file system under `dir` right now: create (exclusive), two
/// appends, close, as the task store does per task. Mean CPU time of `n` such creates.
fn file_create_probe(dir: &Path, n: usize) -> anyhow::Result<Duration> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let first = vec![b'x'; 700];
    let second = vec![b'y'; 900];
    let before = thread_cpu_ns();
    for i in 0..n {
        let path = dir.join(format!("probe-{i:08}.jsonl"));
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(&first).with_context(|| format!("writing {}", path.display()))?;
        f.write_all(&second).with_context(|| format!("writing {}", path.display()))?;
    }
    let took = Duration::from_nanos(thread_cpu_ns().saturating_sub(before)) / n as u32;
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(took)
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// A KiB figure of `/proc/<pid>/status` (`VmRSS:`, `RssAnon:`...).
fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status.lines().find(|l| l.starts_with(key)).with_context(|| format!("{key} line in {path}"))?;
    Ok(line.split_whitespace().nth(1).with_context(|| format!("{key} value in {path}"))?.parse()?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Measured {
    start: Duration,
    idle_rss_kib: u64,
    /// Of it, the process's own memory (`RssAnon`); the rest is file pages of the binary and
    /// libraries, shared with every process that maps them and reclaimable.
    idle_anon_kib: u64,
    loaded_rss_kib: u64,
    p50: Duration,
    p99: Duration,
    cpu_per_req: Duration,
    /// Share of one core used while nobody calls (an idle agent should sit at 0).
    idle_cpu_pct: f64,
}

/// Median time from spawn to the first 200 on the card, over `opts.starts` fresh starts.
async fn start_median(label: &str, spec: &dyn Fn(usize) -> Spec, opts: &Opts) -> anyhow::Result<Duration> {
    let card_http = reqwest::Client::builder().no_proxy().build().context("http client")?;
    let mut starts = vec![];
    for i in 0..opts.starts {
        let (p, t) = start(&spec(i), &card_http).await.with_context(|| format!("starting {label}"))?;
        starts.push(t);
        p.stop().await;
    }
    let m = median(starts);
    eprintln!("wire-bench: {label}: start to card {m:?} (median of {})", opts.starts);
    Ok(m)
}

/// One long-lived server under test, with its own keep-alive connection.
struct Live {
    label: String,
    proto: Proto,
    proc: Proc,
    http: reqwest::Client,
    times: Vec<Duration>,
    cpu_ns: u64,
    idle_rss_kib: u64,
    idle_anon_kib: u64,
    idle_cpu_pct: f64,
}

/// Round trips and CPU for every server, interleaved: `ROUNDS` rounds, each giving every server
/// its share of the requests in turn, so a burst of load from elsewhere on the shared machine
/// hits all of them alike and the ratios stay fair.
async fn measure_all(
    targets: Vec<(String, Spec, Proto)>,
    starts: Vec<Duration>,
    opts: &Opts,
) -> anyhow::Result<Vec<Measured>> {
    let card_http = reqwest::Client::builder().no_proxy().build().context("http client")?;
    let mut live = vec![];
    for (label, spec, proto) in targets {
        let (proc, _) = start(&spec, &card_http).await.with_context(|| format!("starting {label}"))?;
        let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(1).build().context("http client")?;
        round_trips(&http, &proc.url, WARMUP, proto).await.with_context(|| format!("warming up {label}"))?;
        live.push(Live {
            label,
            proto,
            proc,
            http,
            times: vec![],
            cpu_ns: 0,
            idle_rss_kib: 0,
            idle_anon_kib: 0,
            idle_cpu_pct: 0.0,
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut idle_before = vec![];
    for l in &mut live {
        l.idle_rss_kib = rss_kib(l.proc.pid)?;
        l.idle_anon_kib = status_kib(l.proc.pid, "RssAnon:")?;
        idle_before.push(cpu_ns(l.proc.pid)?);
    }
    tokio::time::sleep(IDLE_WINDOW).await;
    for (l, before) in live.iter_mut().zip(idle_before) {
        let ns = cpu_ns(l.proc.pid)?.saturating_sub(before);
        l.idle_cpu_pct = ns as f64 / 1e9 / IDLE_WINDOW.as_secs_f64() * 100.0;
    }
    for round in 0..ROUNDS {
        let share = opts.requests / ROUNDS + usize::from(round < opts.requests % ROUNDS);
        for l in &mut live {
            let before = cpu_ns(l.proc.pid)?;
            let t = round_trips(&l.http, &l.proc.url, share, l.proto)
                .await
                .with_context(|| format!("timing {}", l.label))?;
            l.cpu_ns += cpu_ns(l.proc.pid)?.saturating_sub(before);
            l.times.extend(t);
        }
    }
    let mut out = vec![];
    for (mut l, start) in live.into_iter().zip(starts) {
        let loaded_rss_kib = rss_kib(l.proc.pid)?;
        l.proc.stop().await;
        l.times.sort();
        let cpu = Duration::from_nanos(l.cpu_ns);
        let m = Measured {
            start,
            idle_rss_kib: l.idle_rss_kib,
            idle_anon_kib: l.idle_anon_kib,
            loaded_rss_kib,
            p50: percentile(&l.times, 50.0),
            p99: percentile(&l.times, 99.0),
            cpu_per_req: cpu / opts.requests as u32,
            idle_cpu_pct: l.idle_cpu_pct,
        };
        eprintln!(
            "wire-bench: {}: p50 {:?} p99 {:?} cpu/req {:?} idle rss {} KiB idle cpu {:.1}%",
            l.label, m.p50, m.p99, m.cpu_per_req, m.idle_rss_kib, m.idle_cpu_pct
        );
        out.push(m);
    }
    Ok(out)
}

/// Start all five agents at once; the time until every card has answered 200.
async fn swarm_up(bins: &Path, home: &Path, run: usize) -> anyhow::Result<Duration> {
    let http = reqwest::Client::builder().no_proxy().build().context("http client")?;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for name in AGENTS {
        let spec = ratchet_spec(bins, name, home, &format!("swarm-{run}-{name}"));
        let http = http.clone();
        set.spawn(async move { start(&spec, &http).await });
    }
    let mut procs = vec![];
    while let Some(r) = set.join_next().await {
        procs.push(r.context("joining a start")??.0);
    }
    let took = t0.elapsed();
    for p in procs {
        p.stop().await;
    }
    Ok(took)
}

fn ratchet_spec(bins: &Path, name: &str, home: &Path, state: &str) -> Spec {
    Spec {
        program: bins.join(name),
        args: vec![],
        env: vec![
            ("RATCHET_HOME".into(), home.into()),
            ("RATCHET_LISTEN".into(), "127.0.0.1:0".into()),
            ("RATCHET_TOKEN".into(), BENCH_TOKEN.into()),
            ("RATCHET_STATE_DIR".into(), home.join("state").join(state).into()),
            ("RATCHET_AGENT_NAME".into(), name.into()),
        ],
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Today's date (UTC) as YYYY-MM-DD, from the days since the epoch (Howard Hinnant's civil_from_days).
fn today() -> String {
    let days =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

async fn bench(opts: Opts) -> anyhow::Result<()> {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("benches/ sits in the workspace root").to_path_buf();
    let me = std::env::current_exe().context("locating wire-bench")?;
    let bins = me.parent().context("wire-bench lives in target/<profile>")?.to_path_buf();
    for name in AGENTS {
        let b = bins.join(name);
        if !b.exists() {
            bail!("{} is missing; build the agents first: cargo build --release --workspace --bins", b.display());
        }
    }
    let venv_python = |var: &str, dir: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target").join("interop").join(dir).join("bin").join("python"))
    };
    let python03 = venv_python("RATCHET_A2A_PY03", "a2a-0.3");
    let python1 = venv_python("RATCHET_A2A_PY1", "a2a-1");
    for p in [&python03, &python1] {
        if !p.exists() {
            bail!("{} is missing; make the Python virtualenvs first: tests/interop/setup-venvs", p.display());
        }
    }
    let sdk_version = |python: &Path| -> anyhow::Result<String> {
        let out = std::process::Command::new(python)
            .args(["-c", "import importlib.metadata as m; print(m.version('a2a-sdk'))"])
            .output()
            .context("asking the venv for its a2a-sdk version")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let (sdk03, sdk1) = (sdk_version(&python03)?, sdk_version(&python1)?);
    let interop = root.join("tests").join("interop");
    let echo03 = interop.join("echo_agent.py");
    let echo1 = interop.join("echo_agent_v1.py");
    // The agents' home (and so their task stores) sits where `ratchet up` in this checkout keeps
    // agent state: under worktrees/ (git-ignored; a dot name, so a running swarm's watchers skip
    // it). Where it sits matters on ext4: see `file_create_probe`. `--home-in /tmp` measures /tmp.
    let home_in = opts.home_in.clone().unwrap_or_else(|| root.join("worktrees").join(".wire-bench"));
    std::fs::create_dir_all(&home_in).with_context(|| format!("creating {}", home_in.display()))?;
    let home = tempfile::Builder::new()
        .prefix("home-")
        .tempdir_in(&home_in)
        .with_context(|| format!("making a temp dir in {}", home_in.display()))?;
    let create_cost = file_create_probe(&home.path().join("probe"), 500)?;
    eprintln!("wire-bench: one task file (create, 2 appends, close) under the agents' home: {create_cost:?} CPU");
    let load_before = loadavg();
    eprintln!("wire-bench: load average before: {load_before}");

    let bare_spec = |_i: usize| Spec { program: me.clone(), args: vec!["--bare-server".into()], env: vec![] };
    let agent = opts.agent.clone();
    let ratchet = |i: usize| ratchet_spec(&bins, &agent, home.path(), &format!("{agent}-{i}"));
    let ratchet1 = |i: usize| ratchet_spec(&bins, &agent, home.path(), &format!("{agent}-v1-{i}"));
    let py03_spec = |_i: usize| Spec { program: python03.clone(), args: vec![echo03.clone().into()], env: vec![] };
    let py1_spec = |_i: usize| Spec {
        program: python1.clone(),
        args: vec![echo1.clone().into(), "--minimal".into()],
        env: vec![],
    };

    let labels = [
        "bare axum".to_string(),
        format!("Ratchet ({agent}) A2A 0.3"),
        format!("Ratchet ({agent}) A2A 1.0"),
        format!("Python a2a-sdk {sdk03} A2A 0.3"),
        format!("Python a2a-sdk {sdk1} A2A 1.0"),
    ];
    let specs: [&dyn Fn(usize) -> Spec; 5] = [&bare_spec, &ratchet, &ratchet1, &py03_spec, &py1_spec];
    let protos = [Proto::V03, Proto::V03, Proto::V1, Proto::V03, Proto::V1];
    let mut starts = vec![];
    for (i, (label, spec)) in labels.iter().zip(specs).enumerate() {
        // Ratchet's start is the same binary either way: measured once.
        if i == 2 {
            starts.push(starts[1]);
            continue;
        }
        starts.push(start_median(label, spec, &opts).await?);
    }
    let targets = labels
        .iter()
        .cloned()
        .zip(specs.iter().map(|s| s(opts.starts)))
        .zip(protos)
        .map(|((l, s), p)| (l, s, p))
        .collect();
    let [bare, rat, rat1, py, py1]: [Measured; 5] =
        measure_all(targets, starts, &opts).await?.try_into().map_err(|_| anyhow::anyhow!("five results"))?;

    let mut swarm = vec![];
    for run in 0..opts.swarm_runs {
        swarm.push(swarm_up(&bins, home.path(), run).await?);
    }
    swarm.sort();
    let swarm_median = swarm[swarm.len() / 2];
    let swarm_max = *swarm.last().expect("at least one swarm run");
    let load_after = loadavg();
    eprintln!("wire-bench: load average after: {load_after}");

    let ratio = |a: &Measured, b: &Measured| a.p50.as_secs_f64() / b.p50.as_secs_f64();
    let (vs_bare, vs_bare1) = (ratio(&rat, &bare), ratio(&rat1, &bare));
    let (py_vs, py_vs1) = (ratio(&py, &rat), ratio(&py1, &rat1));
    let cpu_ratio = |a: &Measured, b: &Measured| a.cpu_per_req.as_secs_f64() / b.cpu_per_req.as_secs_f64().max(1e-9);
    let n = opts.requests;
    let mut t = String::new();
    t += &format!(
        "| metric | bare axum (floor) | Ratchet (`{agent}`), A2A 0.3 | Ratchet (`{agent}`), A2A 1.0 | Python a2a-sdk {sdk03} (0.3) | Python a2a-sdk {sdk1} (1.0) | target for Ratchet | met |\n"
    );
    t += "| --- | --- | --- | --- | --- | --- | --- | --- |\n";
    t += &format!(
        "| send p50 ({n} on one keep-alive connection; 0.3 `message/send`, 1.0 `SendMessage`) | {} | {} | {} | {} | {} | <= 2x bare ({}) and >= 10x faster than Python, in both versions | {} (0.3: {vs_bare:.2}x bare, Python {py_vs:.1}x slower; 1.0: {vs_bare1:.2}x bare, Python {py_vs1:.1}x slower) |\n",
        us(bare.p50),
        us(rat.p50),
        us(rat1.p50),
        us(py.p50),
        us(py1.p50),
        us(bare.p50 * 2),
        verdict(vs_bare <= 2.0 && py_vs >= 10.0 && vs_bare1 <= 2.0 && py_vs1 >= 10.0)
    );
    t += &format!(
        "| send p99 | {} | {} | {} | {} | {} | | |\n",
        us(bare.p99),
        us(rat.p99),
        us(rat1.p99),
        us(py.p99),
        us(py1.p99)
    );
    t += &format!(
        "| server CPU per request (all threads) | {} | {} | {} | {} | {} | | Python uses {:.1}x (0.3) and {:.1}x (1.0) the CPU |\n",
        us(bare.cpu_per_req),
        us(rat.cpu_per_req),
        us(rat1.cpu_per_req),
        us(py.cpu_per_req),
        us(py1.cpu_per_req),
        cpu_ratio(&py, &rat),
        cpu_ratio(&py1, &rat1)
    );
    t += &format!(
        "| process start to card served (median of {}) | {} | {} | (same binary) | {} | {} | <= 20 ms | {} |\n",
        opts.starts,
        ms(bare.start),
        ms(rat.start),
        ms(py.start),
        ms(py1.start),
        verdict(rat.start <= Duration::from_millis(20))
    );
    t += &format!(
        "| idle RSS after {WARMUP} warm-up requests | {} | {} | {} | {} | {} | <= 8 MiB | {} |\n",
        mib(bare.idle_rss_kib),
        mib(rat.idle_rss_kib),
        mib(rat1.idle_rss_kib),
        mib(py.idle_rss_kib),
        mib(py1.idle_rss_kib),
        verdict(rat.idle_rss_kib.max(rat1.idle_rss_kib) <= 8 * 1024)
    );
    t += &format!(
        "| of it, the process's own memory (`RssAnon`; the rest is the binary's and libraries' file pages, shared and reclaimable) | {} | {} | {} | {} | {} | | |\n",
        mib(bare.idle_anon_kib),
        mib(rat.idle_anon_kib),
        mib(rat1.idle_anon_kib),
        mib(py.idle_anon_kib),
        mib(py1.idle_anon_kib)
    );
    t += &format!(
        "| CPU while idle ({} s after the warm-up, no requests) | {:.1}% of a core | {:.1}% | {:.1}% | {:.1}% | {:.1}% | 0 | {} |\n",
        IDLE_WINDOW.as_secs(),
        bare.idle_cpu_pct,
        rat.idle_cpu_pct,
        rat1.idle_cpu_pct,
        py.idle_cpu_pct,
        py1.idle_cpu_pct,
        verdict(rat.idle_cpu_pct.max(rat1.idle_cpu_pct) < 1.0)
    );
    t += &format!(
        "| RSS after {} more requests | {} | {} | {} | {} | {} | | |\n",
        n,
        mib(bare.loaded_rss_kib),
        mib(rat.loaded_rss_kib),
        mib(rat1.loaded_rss_kib),
        mib(py.loaded_rss_kib),
        mib(py1.loaded_rss_kib)
    );
    t += &format!(
        "| whole swarm: 5 agents started at once to every card served (median of {}, max {}) | | {} | | | | <= 200 ms | {} |\n",
        opts.swarm_runs,
        ms(swarm_max),
        ms(swarm_median),
        verdict(swarm_median <= Duration::from_millis(200))
    );
    t += &format!(
        "\nFor comparison, the file system cost of one file per task (create, two appends, close) in the agents' \
         home at the time of the run: {} of CPU. Ratchet's task store used to write one file per task; it now \
         appends every task's events to one log per agent, which removed that cost (ext4 inode allocation, \
         which grows with recent deletions near the directory) from each request.\n",
        us(create_cost)
    );
    println!("{t}");

    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = if args.is_empty() { REPRODUCE.to_string() } else { format!("{REPRODUCE} {}", args.join(" ")) };
    let section = format!(
        "{SECTION}\n\n\
         Measured {date} by `wire-bench` on this {cores}-core machine ({cpu}), release build, loopback only.\n\
         Load average (1, 5, 15 min) before: {load_before}; after: {load_after} (the machine is shared with other builds).\n\n\
         Reproduce:\n\n```sh\n{command}\n```\n\n\
         {t}\n\
         How it is measured: each server is its own process on 127.0.0.1, spawned by the bench, which reads the \
         `LISTENING <url>` line it prints. *bare axum* is `wire-bench --bare-server`: a current-thread axum app that \
         answers every POST with canned bytes (no parsing, no storage). *Ratchet* is the release `{agent}` binary \
         answering with its built-in `status` skill (parse, validate, persist the task log to disk, run, answer), \
         one process asked in A2A 0.3 (`message/send`, no version header) and one in 1.0 (`SendMessage`, \
         `A2A-Version: 1.0`: the same operation, converted to and from the 1.0 forms). \
         *Python 0.3* is `tests/interop/echo_agent.py` (a2a-sdk {sdk03}: A2AStarletteApplication + DefaultRequestHandler + \
         InMemoryTaskStore); *Python 1.0* is `tests/interop/echo_agent_v1.py --minimal` (a2a-sdk {sdk1}: the SDK's \
         Starlette routes + DefaultRequestHandler + InMemoryTaskStore, completing at once like the 0.3 echo); both on \
         uvicorn with uvloop and httptools. Round trips: a blocking send with one text part (and \
         `metadata.skill = \"status\"`, which the echo agents ignore), \
         {WARMUP} warm-up requests then {n} timed ones, sequential, on one reqwest keep-alive connection per server, \
         interleaved in {ROUNDS} rounds across the five servers (so load from elsewhere hits all alike); every \
         answer is checked to be a completed task. CPU: time on a CPU of all the server's threads (`/proc/<pid>/task/*/schedstat`, \
         nanoseconds) across its timed rounds, divided by {n}. Start to card: spawn to the first 200 on \
         `/.well-known/agent-card.json`. Idle RSS: `VmRSS` 1 s after the warm-up; idle CPU: CPU time over the {idle} s that follow. Swarm: the five release agent \
         binaries spawned at once, until all five cards answered. The agents' home (so their task \
         stores, one append-only log per agent) is a fresh directory under `{home_in}`, where `ratchet up` keeps agent state.\n",
        date = today(),
        cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu = cpu_model(),
        idle = IDLE_WINDOW.as_secs(),
        home_in = home_in.strip_prefix(&root).unwrap_or(&home_in).display(),
    );
    if opts.write {
        let path = root.join("BENCHMARKS.md");
        write_section(&path, SECTION, &section)?;
        eprintln!("wire-bench: wrote the \"{SECTION}\" section of {}", path.display());
    }
    Ok(())
}
