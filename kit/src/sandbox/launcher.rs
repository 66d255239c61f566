//! The namespaces sandbox, for machines without bubblewrap: the `ratchet-sandbox` binary
//! (`ratchet-sandbox [plan] -- sh -c COMMAND`, see [`Plan::launcher_argv`]) applies a [`Plan`] with
//! Linux namespaces and then runs the command. Three processes:
//!
//! 1. the launcher (in the caller's process group): creates user (the caller's uid and gid mapped
//!    to themselves), mount, pid, ipc, uts and (unless the network is allowed) network namespaces,
//!    forks the init, waits for it and ends the way the command ended: the same exit code, or killed
//!    by the same signal;
//! 2. the init, pid 1 of the new pid namespace (in the caller's process group too, so the caller's
//!    group kill reaches it): builds the file-system view on a fresh root (bubblewrap's method: a
//!    tmpfs as the new root with the old one at `/oldroot`, the plan's mounts made under `/newroot`,
//!    then `pivot_root` into it and the old root detached), brings the loopback up, forks the
//!    command and reaps every process until the command ends. When it exits, the kernel kills every
//!    process left in the namespace: nothing the command started outlives it, `setsid` or not;
//! 3. the command: a new session (no controlling terminal), `no_new_privs`, no capabilities (the
//!    `noroot` secure bits, empty ambient and bounding sets: a root command keeps its uid but cannot
//!    unmount or remount anything), then `exec`.
//!
//! Both forks happen in a single-threaded process (this binary starts no thread). A setup failure
//! exits [`LAUNCHER_SETUP_FAILED`] with the reason on stderr after [`LAUNCHER_ERROR_PREFIX`].

use std::ffi::{CString, OsString};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, SigSet, Signal, raise, signal};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, execvp, fork, getgid, getuid, pipe2, pivot_root, setsid};

use super::{LAUNCHER_ERROR_PREFIX, LAUNCHER_SETUP_FAILED, LaunchArgs, Mount, Plan, Report};

/// Device nodes of the minimal `/dev`, bound from the host's.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Parts of `/proc` made read-only (as bubblewrap does): a root command could otherwise write
/// `/proc/sysrq-trigger` (no capability is checked there).
const PROC_READ_ONLY: [&str; 4] = ["sys", "sysrq-trigger", "irq", "bus"];

nix::ioctl_read_bad!(get_interface_flags, nix::libc::SIOCGIFFLAGS, nix::libc::ifreq);
nix::ioctl_write_ptr_bad!(set_interface_flags, nix::libc::SIOCSIFFLAGS, nix::libc::ifreq);

/// The `ratchet-sandbox` binary's `main`.
pub fn main() -> ! {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let end = match LaunchArgs::parse(&args) {
        Ok(args) => {
            let mut report = ReportFd::take(args.report_fd);
            let end = if args.report_only {
                run_and_wait(&args.plan, &args.command)
            } else {
                launch(&args.plan, &args.command)
            };
            report.send(&end);
            end
        }
        Err(e) => Report::SetupFailed(format!("bad arguments: {e} (usage: ratchet-sandbox [plan] -- COMMAND...)")),
    };
    std::process::exit(finish(end))
}

/// Ends the way the command ended: its exit code, or its signal (raised on ourselves); a setup
/// failure is [`LAUNCHER_SETUP_FAILED`] with the reason on stderr.
fn finish(end: Report) -> i32 {
    match end {
        Report::Exited(code) => code,
        Report::Signaled(signal) => end_by_signal(signal),
        Report::SetupFailed(why) => {
            eprintln!("{LAUNCHER_ERROR_PREFIX}{why}");
            LAUNCHER_SETUP_FAILED
        }
    }
}

/// The caller's report pipe, kept out of every command (close-on-exec from the start).
struct ReportFd(Option<std::fs::File>);

impl ReportFd {
    fn take(fd: Option<i32>) -> ReportFd {
        ReportFd(fd.and_then(|fd| {
            // SAFETY: the caller opened this fd for us and passed its number (`--report-fd`); nothing
            // else in this process uses it, and owning it closes it when we are done.
            #[allow(unsafe_code)]
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).ok()?;
            Some(std::fs::File::from(owned))
        }))
    }

    fn send(&mut self, report: &Report) {
        if let Some(f) = &mut self.0 {
            let _ = f.write_all(report.line().as_bytes());
        }
    }
}

/// The shim inside bubblewrap: run the command as a child, wait, report how it ended.
fn run_and_wait(plan: &Plan, command: &[OsString]) -> Report {
    // SAFETY: this process is single-threaded (the launcher starts no thread), so the child may
    // allocate and run ordinary code after the fork.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() };
    match forked {
        Err(e) => Report::SetupFailed(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            let why = exec_command(plan, command, false);
            eprintln!("{LAUNCHER_ERROR_PREFIX}{why}");
            std::process::exit(LAUNCHER_SETUP_FAILED)
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => break Report::Exited(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => break Report::Signaled(signal as i32),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => break Report::SetupFailed(format!("waiting for the command: {e}")),
            }
        },
    }
}

/// The namespaces sandbox: returns how the command ended.
fn launch(plan: &Plan, command: &[OsString]) -> Report {
    // Die with whoever started us (bubblewrap's --die-with-parent).
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return Report::SetupFailed(format!("prctl(PR_SET_PDEATHSIG): {e}"));
    }
    let (uid, gid) = (getuid(), getgid());
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if !plan.share_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = unshare(flags) {
        return Report::SetupFailed(format!(
            "cannot create user, mount, pid, ipc and network namespaces (unshare: {e}); unprivileged user namespaces may be disabled here (sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces): enable them or install bubblewrap"
        ));
    }
    let maps = [
        ("setgroups", "deny".to_string()),
        ("uid_map", format!("{uid} {uid} 1")),
        ("gid_map", format!("{gid} {gid} 1")),
    ];
    for (file, text) in maps {
        if let Err(e) = std::fs::write(format!("/proc/self/{file}"), text) {
            return Report::SetupFailed(format!("writing /proc/self/{file}: {e}"));
        }
    }
    let (from_init, to_launcher) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(pair) => pair,
        Err(e) => return Report::SetupFailed(format!("pipe: {e}")),
    };
    // SAFETY: single-threaded, as in `run_and_wait`.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() };
    match forked {
        Err(e) => Report::SetupFailed(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(from_init);
            std::process::exit(init(plan, command, to_launcher))
        }
        Ok(ForkResult::Parent { child }) => {
            drop(to_launcher);
            let status = loop {
                match waitpid(child, None) {
                    Err(Errno::EINTR) => continue,
                    other => break other,
                }
            };
            let mut text = String::new();
            let _ = std::fs::File::from(from_init).read_to_string(&mut text);
            match (Report::parse(&text), status) {
                (Some(report), _) => report,
                // The init itself was killed (by the caller's group kill, or a memory limit).
                (None, Ok(WaitStatus::Signaled(_, signal, _))) => Report::Signaled(signal as i32),
                (None, other) => Report::SetupFailed(format!("the sandbox's init ended without a report ({other:?})")),
            }
        }
    }
}

/// Ends this process by `signal`, so that the caller sees the command's own death.
fn end_by_signal(signal_number: i32) -> i32 {
    if let Ok(sig) = Signal::try_from(signal_number) {
        // SAFETY: installing the default disposition runs no code of ours in a signal handler.
        #[allow(unsafe_code)]
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        let mut set = SigSet::empty();
        set.add(sig);
        let _ = set.thread_unblock();
        let _ = raise(sig);
    }
    // A signal whose default is to continue (or that could not be raised): the shell's convention.
    128 + signal_number
}

/// Pid 1 of the new namespaces: set up, run the command, reap, report. Returns its exit code.
fn init(plan: &Plan, command: &[OsString], to_launcher: OwnedFd) -> i32 {
    let mut report = std::fs::File::from(to_launcher);
    let mut send = |r: Report| {
        let _ = report.write_all(r.line().as_bytes());
    };
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if let Err(why) = build_root(plan) {
        send(Report::SetupFailed(why));
        return 1;
    }
    if !plan.share_network
        && let Err(why) = loopback_up()
    {
        send(Report::SetupFailed(why));
        return 1;
    }
    // SAFETY: single-threaded, as in `run_and_wait`.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() };
    let command_pid = match forked {
        Err(e) => {
            send(Report::SetupFailed(format!("fork: {e}")));
            return 1;
        }
        Ok(ForkResult::Child) => {
            let why = exec_command(plan, command, true);
            send(Report::SetupFailed(why));
            std::process::exit(127);
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command_pid => {
                send(Report::Exited(code));
                return 0;
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == command_pid => {
                send(Report::Signaled(signal as i32));
                return 0;
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                send(Report::SetupFailed(format!("waiting for the command: {e}")));
                return 1;
            }
        }
    }
}

/// In the command's process: (when confining) a new session, the checkout as working directory,
/// no privileges; then exec. Returns only on failure, with the reason.
fn exec_command(plan: &Plan, command: &[OsString], confine: bool) -> String {
    if confine {
        if let Err(e) = setsid() {
            return format!("setsid: {e}");
        }
        if let Err(e) = std::env::set_current_dir(&plan.cwd) {
            return format!("cannot enter the checkout {}: {e}", plan.cwd.display());
        }
        if let Err(why) = drop_privileges() {
            return why;
        }
    }
    let argv: Result<Vec<CString>, _> = command.iter().map(|a| CString::new(a.as_bytes())).collect();
    let Ok(argv) = argv else { return "the command contains a NUL byte".into() };
    match execvp(&argv[0], &argv) {
        Err(e) => format!("cannot run {}: {e}", command[0].to_string_lossy()),
        Ok(never) => match never {},
    }
}

/// `no_new_privs`, then no capabilities across `exec`: with the `noroot` secure bits uid 0 gains
/// none, the ambient set is empty and locked, and the bounding set is emptied.
fn drop_privileges() -> Result<(), String> {
    use nix::libc;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("prctl(PR_SET_NO_NEW_PRIVS): {e}"))?;
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_KEEP_CAPS_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    let prctl = |option: libc::c_int, arg: libc::c_ulong, arg2: libc::c_ulong| -> Result<(), Errno> {
        // SAFETY: prctl(2) with integer arguments only; no memory is shared with the kernel.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::prctl(option, arg, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong) };
        if rc == -1 { Err(Errno::last()) } else { Ok(()) }
    };
    prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0).map_err(|e| format!("prctl(PR_SET_SECUREBITS): {e}"))?;
    prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0)
        .map_err(|e| format!("prctl(PR_CAP_AMBIENT_CLEAR_ALL): {e}"))?;
    for cap in 0..64 {
        match prctl(libc::PR_CAPBSET_DROP, cap, 0) {
            Ok(()) => {}
            Err(Errno::EINVAL) => break, // past the last capability this kernel knows
            Err(e) => return Err(format!("prctl(PR_CAPBSET_DROP, {cap}): {e}")),
        }
    }
    Ok(())
}

/// `/newroot/<path>`.
fn new(path: &Path) -> PathBuf {
    Path::new("/newroot").join(path.strip_prefix("/").unwrap_or(path))
}

/// `/oldroot/<path>`.
fn old(path: &Path) -> PathBuf {
    Path::new("/oldroot").join(path.strip_prefix("/").unwrap_or(path))
}

fn mount_err(what: &str, target: &Path, e: Errno) -> String {
    format!("{what} {}: {e}", target.display())
}

/// Builds the plan's view under a fresh root and switches to it.
fn build_root(plan: &Plan) -> Result<(), String> {
    let none = None::<&str>;
    // Nothing we mount propagates back to the host.
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| mount_err("making private", Path::new("/"), e))?;
    // A tmpfs as the new root, the old root kept at /oldroot for the sources of bind mounts.
    let base = Path::new("/tmp");
    mount(Some("tmpfs"), base, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))
        .map_err(|e| mount_err("mounting a tmpfs on", base, e))?;
    for dir in ["newroot", "oldroot"] {
        std::fs::create_dir(base.join(dir)).map_err(|e| format!("mkdir {}: {e}", base.join(dir).display()))?;
    }
    pivot_root(base, &base.join("oldroot")).map_err(|e| mount_err("pivot_root to", base, e))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    for m in &plan.mounts {
        apply(m)?;
    }
    mount(none, "/oldroot", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| mount_err("making private", Path::new("/oldroot"), e))?;
    umount2("/oldroot", MntFlags::MNT_DETACH).map_err(|e| mount_err("detaching", Path::new("/oldroot"), e))?;
    // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves the new one.
    std::env::set_current_dir("/newroot").map_err(|e| format!("chdir /newroot: {e}"))?;
    pivot_root(".", ".").map_err(|e| mount_err("pivot_root to", Path::new("/newroot"), e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| mount_err("detaching the setup root", Path::new("/"), e))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

fn apply(m: &Mount) -> Result<(), String> {
    let none = None::<&str>;
    let tmpfs = |target: &Path, mode: &str| {
        std::fs::create_dir_all(target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
        mount(Some("tmpfs"), target, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(mode))
            .map_err(|e| mount_err("mounting a tmpfs on", target, e))
    };
    match m {
        Mount::RoRoot => {
            let root = Path::new("/newroot");
            mount(Some("/oldroot"), root, none, MsFlags::MS_BIND | MsFlags::MS_REC, none)
                .map_err(|e| mount_err("binding the host's root on", root, e))?;
            restrict(root, true)
        }
        Mount::Dev => {
            let dev = new(Path::new("/dev"));
            tmpfs(&dev, "mode=0755")?;
            for name in DEVICES {
                let (source, target) = (old(Path::new("/dev")).join(name), dev.join(name));
                if !source.exists() {
                    continue;
                }
                std::fs::File::create(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
                mount(Some(&source), &target, none, MsFlags::MS_BIND, none)
                    .map_err(|e| mount_err("binding a device on", &target, e))?;
            }
            for (link, to) in [
                ("fd", "/proc/self/fd"),
                ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"),
                ("stderr", "/proc/self/fd/2"),
                ("ptmx", "pts/ptmx"),
            ] {
                std::os::unix::fs::symlink(to, dev.join(link))
                    .map_err(|e| format!("symlink {}: {e}", dev.join(link).display()))?;
            }
            tmpfs(&dev.join("shm"), "mode=1777")?;
            let pts = dev.join("pts");
            std::fs::create_dir(&pts).map_err(|e| format!("mkdir {}: {e}", pts.display()))?;
            mount(
                Some("devpts"),
                &pts,
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=620"),
            )
            .map_err(|e| mount_err("mounting devpts on", &pts, e))
        }
        Mount::Proc => {
            let proc = new(Path::new("/proc"));
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(Some("proc"), &proc, Some("proc"), flags, none)
                .map_err(|e| mount_err("mounting proc on", &proc, e))?;
            for part in PROC_READ_ONLY {
                let p = proc.join(part);
                if p.exists() {
                    mount(Some(&p), &p, none, MsFlags::MS_BIND | MsFlags::MS_REC, none)
                        .map_err(|e| mount_err("binding", &p, e))?;
                    restrict(&p, true)?;
                }
            }
            Ok(())
        }
        Mount::Tmpfs(path) => tmpfs(&new(path), "mode=0755"),
        Mount::RoBind(path) | Mount::Bind(path) => {
            let (source, target) = (old(path), new(path));
            let is_dir = std::fs::metadata(&source).map_err(|e| format!("{}: {e}", path.display()))?.is_dir();
            if is_dir {
                std::fs::create_dir_all(&target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
            } else if std::fs::symlink_metadata(&target).is_err() {
                let parent = target.parent().expect("a path under /newroot has a parent");
                std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
                std::fs::File::create(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
            }
            mount(Some(&source), &target, none, MsFlags::MS_BIND | MsFlags::MS_REC, none)
                .map_err(|e| mount_err("binding", &target, e))?;
            restrict(&target, matches!(m, Mount::RoBind(_)))
        }
        Mount::Dir(path) => {
            use std::os::unix::fs::PermissionsExt as _;
            let target = new(path);
            std::fs::create_dir_all(&target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o555))
                .map_err(|e| format!("chmod {}: {e}", target.display()))
        }
        Mount::RemountRo(path) => {
            let target = new(path);
            let flags = mount_table()?
                .into_iter()
                .rev()
                .find(|(point, _)| *point == target)
                .map(|(_, flags)| flags)
                .ok_or_else(|| format!("{} is not a mount point", target.display()))?;
            remount(&target, flags | MsFlags::MS_RDONLY)
        }
    }
}

/// Every mount at or below `dir` gets nosuid and nodev, and read-only when asked (bubblewrap's
/// treatment of bind mounts); the flags the kernel locked (noexec, the atime mode) are kept.
fn restrict(dir: &Path, read_only: bool) -> Result<(), String> {
    for (point, flags) in mount_table()?.into_iter().filter(|(p, _)| p.starts_with(dir)) {
        let wanted = flags
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | if read_only { MsFlags::MS_RDONLY } else { MsFlags::empty() };
        if wanted != flags {
            remount(&point, wanted)?;
        }
    }
    Ok(())
}

fn remount(point: &Path, flags: MsFlags) -> Result<(), String> {
    match mount(None::<&str>, point, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags, None::<&str>) {
        // A mount point we cannot even look at is one the command cannot use either (bubblewrap
        // skips those too).
        Ok(()) | Err(Errno::EACCES) => Ok(()),
        Err(e) => Err(mount_err("remounting", point, e)),
    }
}

/// (mount point, per-mount flags) of every mount, in the order the kernel lists them, as seen
/// from the setup root.
fn mount_table() -> Result<Vec<(PathBuf, MsFlags)>, String> {
    let path = "/oldroot/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`: the mount
/// point (field 5, octal escapes undone) and its per-mount options (field 6).
fn parse_mountinfo_line(line: &str) -> Option<(PathBuf, MsFlags)> {
    let mut fields = line.split(' ');
    let point = fields.nth(4)?;
    let options = fields.next()?;
    let mut flags = MsFlags::empty();
    for option in options.split(',') {
        flags |= match option {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            _ => MsFlags::empty(),
        };
    }
    if !flags.intersects(MsFlags::MS_NOATIME | MsFlags::MS_RELATIME) {
        flags |= MsFlags::MS_STRICTATIME;
    }
    Some((PathBuf::from(OsString::from_vec(unescape_octal(point))), flags))
}

/// Undoes mountinfo's `\040`-style escapes (space, tab, newline, backslash).
fn unescape_octal(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match digits {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Brings `lo` up in the new network namespace (local servers of tests keep working).
fn loopback_up() -> Result<(), String> {
    use nix::libc;
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("socket for the loopback: {e}"))?;
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, src) in name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    let mut req = libc::ifreq { ifr_name: name, ifr_ifru: libc::__c_anonymous_ifr_ifru { ifru_flags: 0 } };
    // SAFETY: `req` is a valid, initialised ifreq that lives across both calls; SIOCGIFFLAGS writes
    // only its flags, SIOCSIFFLAGS only reads it.
    #[allow(unsafe_code)]
    unsafe {
        get_interface_flags(sock.as_raw_fd(), &mut req).map_err(|e| format!("SIOCGIFFLAGS lo: {e}"))?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        set_interface_flags(sock.as_raw_fd(), &req).map_err(|e| format!("SIOCSIFFLAGS lo: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_mount_points_and_locked_flags() {
        let line = "36 35 98:0 / /mnt/with\\040space rw,nosuid,nodev,noexec,relatime shared:1 - ext4 /dev/vda rw";
        let (point, flags) = parse_mountinfo_line(line).unwrap();
        assert_eq!(point, Path::new("/mnt/with space"));
        assert_eq!(flags, MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME);
        let (_, flags) = parse_mountinfo_line("1 2 0:1 / / ro,noatime - tmpfs t ro").unwrap();
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOATIME);
        let (_, flags) = parse_mountinfo_line("1 2 0:1 / /x rw - tmpfs t rw").unwrap();
        assert_eq!(flags, MsFlags::MS_STRICTATIME);
        assert_eq!(unescape_octal("a\\134b\\011\\12"), b"a\\b\t\\12");
    }
}
