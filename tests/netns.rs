//! Hosts made of network namespaces, for the multi-host tests: each host is a named network
//! namespace (`ip netns`) joined to the first one by a veth pair (10.231.<k>.1 on the first
//! host, 10.231.<k>.2 on host k), with its loopback up. Processes start in a host through
//! `nsenter --net=/run/netns/<name>` (not `ip netns exec`, which remounts /sys). The namespaces
//! are deleted on drop.
//!
//! Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2: [`Hosts::new`] says clearly what
//! is missing. `tests/run` sets `RATCHET_TEST_SKIP_NETNS=1` (and says so) where namespaces cannot
//! be made; [`skip_reason`] reads it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{ProcGuard, bin, hermetic};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why the multi-host tests are skipped here, when `tests/run` decided so.
pub fn skip_reason() -> Option<String> {
    std::env::var("RATCHET_TEST_SKIP_NETNS").ok().filter(|v| v == "1").map(|_| {
        "SKIPPED: network namespaces are not available on this machine (RATCHET_TEST_SKIP_NETNS=1, set by tests/run); \
         run the tests as root with iproute2 to test multi-host"
            .to_string()
    })
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// A set of hosts; host 0 is the hub every other host has a link to.
pub struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    /// A remote member `program` on host `i`: its own home (`<home>/repo`, no path shared with
    /// the coordinator), the coordinator by url and the swarm's token, its output in
    /// `<home>/<name>.out` and `<home>/<name>.log`.
    pub fn remote_member(
        &self,
        i: usize,
        program: &str,
        name: &str,
        home: &Path,
        coordinator: &str,
        token: &str,
    ) -> ProcGuard {
        std::fs::create_dir_all(home).expect("member home");
        let w = self.wrapper(i);
        let mut cmd = Command::new(&w[0]);
        hermetic(&mut cmd, home);
        cmd.args(&w[1..])
            .arg(bin(program))
            .env("RATCHET_HOME", home.join("repo"))
            .env("RATCHET_AGENT_NAME", name)
            .env("RATCHET_HOST", format!("host{i}"))
            .env("RATCHET_TOKEN", token)
            .env("RATCHET_COORDINATOR_URL", coordinator)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::piped())
            .stdout(std::fs::File::create(home.join(format!("{name}.out"))).expect("log file"))
            .stderr(std::fs::File::create(home.join(format!("{name}.log"))).expect("log file"));
        ProcGuard::spawn(cmd)
    }

    /// `n` hosts (at least 2). Panics with what is missing when namespaces cannot be made.
    pub fn new(n: usize) -> Hosts {
        assert!(n >= 2, "at least two hosts");
        let id = format!("{}{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed));
        let names: Vec<String> = (0..n).map(|i| format!("rt{id}h{i}")).collect();
        let hosts = Hosts { names: vec![] };
        let mut hosts = hosts;
        for (i, name) in names.iter().enumerate() {
            if let Err(e) = run(&["ip", "netns", "add", name]) {
                panic!(
                    "cannot make network namespace {name}: {e}\nthe multi-host tests need root (or CAP_NET_ADMIN) and iproute2; \
                     tests/run sets RATCHET_TEST_SKIP_NETNS=1 where they are missing"
                );
            }
            hosts.names.push(name.clone());
            run(&["ip", "-n", name, "link", "set", "lo", "up"]).expect("loopback up");
            if i == 0 {
                continue;
            }
            let (a, b) = (format!("rv{id}a{i}"), format!("rv{id}b{i}"));
            let (a, b) = (&a[..a.len().min(15)], &b[..b.len().min(15)]);
            let hub = &names[0];
            run(&["ip", "-n", hub, "link", "add", a, "type", "veth", "peer", "name", b, "netns", name])
                .expect("veth pair");
            run(&["ip", "-n", hub, "addr", "add", &format!("10.231.{i}.1/24"), "dev", a]).expect("hub address");
            run(&["ip", "-n", name, "addr", "add", &format!("10.231.{i}.2/24"), "dev", b]).expect("host address");
            run(&["ip", "-n", hub, "link", "set", a, "up"]).expect("hub link up");
            run(&["ip", "-n", name, "link", "set", b, "up"]).expect("host link up");
        }
        hosts
    }

    /// The namespace file of host `i`.
    pub fn ns(&self, i: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.names[i])
    }

    /// The address of the hub (host 0) as host `i` reaches it.
    pub fn hub_addr(&self, i: usize) -> String {
        format!("10.231.{i}.1")
    }

    /// The address of host `i` (i >= 1) as the hub reaches it.
    pub fn addr(&self, i: usize) -> String {
        format!("10.231.{i}.2")
    }

    /// `nsenter --net=<host i>` followed by `program`: a command that runs in host `i`.
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        vec!["nsenter".into(), format!("--net={}", self.ns(i).display())]
    }

    /// Runs `f` on a thread that entered host `i`'s network namespace (its sockets and the
    /// processes it starts are in that host).
    pub fn on_host<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.ns(i);
        std::thread::scope(|s| {
            s.spawn(move || {
                let fd = std::fs::File::open(&ns).expect("open the namespace");
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the host's namespace");
                f()
            })
            .join()
            .expect("host thread")
        })
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}
