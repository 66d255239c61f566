//! A two-node Slurm cluster made of network namespaces, for the job-backend tests: the
//! controller in host 0 (with the swarm), a `slurmd` in host 1 (node `n1`) and one in host 2
//! (node `n2`), one `munged` for all, every file (config, key, spool, state, logs) under the
//! test's own directory. Daemons run in the foreground as children of the test and die with it
//! (`slurmd` started with `nsenter --net`, not `ip netns exec`, which remounts /sys).
//!
//! Needs Debian's `slurmctld slurmd slurm-client munge` (tests/run installs them) and root;
//! `tests/run` sets `RATCHET_TEST_SKIP_SLURM=1`, and says so, where they cannot be had.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ProcGuard;
use crate::netns::Hosts;

/// Why the Slurm tests are skipped here, when `tests/run` decided so.
pub fn skip_reason() -> Option<String> {
    if let Some(why) = crate::netns::skip_reason() {
        return Some(why);
    }
    std::env::var("RATCHET_TEST_SKIP_SLURM").ok().filter(|v| v == "1").map(|_| {
        "SKIPPED: Slurm is not installed and could not be (RATCHET_TEST_SKIP_SLURM=1, set by tests/run); \
         apt-get install slurmctld slurmd slurm-client munge to run the Slurm tests"
            .to_string()
    })
}

pub struct Cluster {
    pub hosts: Hosts,
    pub dir: PathBuf,
    /// `SLURM_CONF` for every client (srun, squeue, scancel).
    pub conf: PathBuf,
    daemons: Vec<ProcGuard>,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(out.status.success(), "`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Cluster {
    /// Start the cluster under `dir` and wait until both nodes are idle.
    pub fn start(dir: &Path) -> Cluster {
        let hosts = Hosts::new(3);
        let name = |i: usize| hosts.ns(i).file_name().expect("a namespace name").to_string_lossy().into_owned();
        // Hosts 1 and 2 reach each other's link through host 0 (the controller is at 10.231.1.1
        // for both).
        run(&["ip", "-n", &name(2), "route", "add", "10.231.1.0/24", "via", "10.231.2.1"]);
        run(&["ip", "-n", &name(1), "route", "add", "10.231.2.0/24", "via", "10.231.1.1"]);
        let dir = dir.to_path_buf();
        for d in ["munge", "ctl", "n1", "n2"] {
            std::fs::create_dir_all(dir.join(d)).expect("cluster dirs");
        }
        let key: Vec<u8> = (0..1024).map(|i| (i * 7 + std::process::id() as usize) as u8).collect();
        let key_path = dir.join("munge/key");
        std::fs::write(&key_path, key).expect("munge key");
        let p = |rel: &str| dir.join(rel).display().to_string();
        run(&["chmod", "0400", &p("munge/key")]);
        let mut daemons = vec![];
        let mut munged = Command::new("munged");
        munged
            .args(["--foreground", "--force"])
            .arg(format!("--socket={}", p("munge/sock")))
            .arg(format!("--key-file={}", p("munge/key")))
            .arg(format!("--pid-file={}", p("munge/pid")))
            .arg(format!("--log-file={}", p("munge/log")))
            .arg(format!("--seed-file={}", p("munge/seed")))
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        daemons.push(ProcGuard::spawn(munged));
        let host = String::from_utf8(Command::new("hostname").output().expect("hostname").stdout).expect("utf-8");
        let conf = dir.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=ratchet\nSlurmctldHost={host}(10.231.1.1)\nSlurmUser=root\nSlurmdUser=root\n\
                 AuthType=auth/munge\nAuthInfo=socket={sock}\nCredType=cred/munge\n\
                 StateSaveLocation={ctl}\nSlurmdSpoolDir={dir}/%n\nSlurmctldPidFile={ctl}/pid\nSlurmdPidFile={dir}/%n/pid\n\
                 SlurmctldPort=6817\nSlurmdPort=6818\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/affinity\n\
                 SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
                 SchedulerParameters=batch_sched_delay=0,sched_min_interval=0\nReturnToService=2\nMpiDefault=none\n\
                 InactiveLimit=30\n\
                 SlurmctldLogFile={ctl}/log\nSlurmdLogFile={dir}/%n/log\n\
                 NodeName=n1 NodeAddr=10.231.1.2 CPUs=2 State=UNKNOWN\nNodeName=n2 NodeAddr=10.231.2.2 CPUs=2 State=UNKNOWN\n\
                 PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP\n",
                host = host.trim(),
                sock = p("munge/sock"),
                ctl = p("ctl"),
                dir = dir.display(),
            ),
        )
        .expect("slurm.conf");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("munge/sock").exists() {
            assert!(
                Instant::now() < deadline,
                "munged did not start: {}",
                std::fs::read_to_string(p("munge/log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let daemon = |i: usize, args: &[&str]| {
            let w = hosts.wrapper(i);
            let mut c = Command::new(&w[0]);
            c.args(&w[1..])
                .args(args)
                .env("SLURM_CONF", &conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            ProcGuard::spawn(c)
        };
        daemons.push(daemon(0, &["slurmctld", "-D", "-i"]));
        daemons.push(daemon(1, &["slurmd", "-D", "-N", "n1"]));
        daemons.push(daemon(2, &["slurmd", "-D", "-N", "n2"]));
        let cluster = Cluster { hosts, dir, conf, daemons };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = cluster.client(0, &["sinfo", "-h", "-o", "%T %D"]);
            if out.trim() == "idle 2" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Slurm nodes did not come up: sinfo says {out:?}\n{}",
                std::fs::read_to_string(cluster.dir.join("ctl/log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// A Slurm client command run in host `i`; its stdout.
    pub fn client(&self, i: usize, args: &[&str]) -> String {
        let w = self.hosts.wrapper(i);
        let out = Command::new(&w[0])
            .args(&w[1..])
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `squeue --states=all` lines `<id> <name> <state> <node>` of the jobs named `ratchet-*`.
    pub fn jobs(&self) -> Vec<(String, String, String, String)> {
        self.client(0, &["squeue", "-h", "--states=all", "-o", "%i %j %T %N"])
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() >= 3 && w[1].starts_with("ratchet-")).then(|| {
                    (w[0].to_string(), w[1].to_string(), w[2].to_string(), w.get(3).unwrap_or(&"").to_string())
                })
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Daemons first (their guards kill them), then the namespaces (Hosts' drop).
        self.daemons.clear();
    }
}
