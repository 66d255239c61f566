//! `subreaper <program> [args...]`: run `program` under a process that is the child subreaper of
//! everything below it, and end only when all of it has ended.
//!
//! A test that `kill -9`s a supervisor runs it through this: the supervisor's orphans are
//! re-parented here instead of to init, so they stay in the test's process tree, where the test
//! can find them; and this process exits only once none is left, so "no orphan" is "this process
//! exited". Exits with the program's exit code (128 + the signal that killed it).

use std::process::Command;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((program, rest)) = args.split_first() else {
        eprintln!("usage: subreaper <program> [args...]");
        std::process::exit(2);
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("subreaper: cannot become a child subreaper: {e}");
        std::process::exit(2);
    }
    let child = match Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("subreaper: cannot start {program}: {e}");
            std::process::exit(2);
        }
    };
    let direct = Pid::from_raw(child.id() as i32);
    let mut code = 0;
    // Reap every descendant (the direct child and whatever is re-parented here) until none is left.
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, c)) if pid == direct => code = c,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == direct => code = 128 + sig as i32,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break, // ECHILD: nothing left below us
        }
    }
    std::process::exit(code);
}
