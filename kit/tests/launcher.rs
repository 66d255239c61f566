//! The `ratchet-sandbox` binary as a program: how it reports what it cannot do, and how the
//! command ended. (Its confinement is tested through `kit::exec` in the unit tests and in
//! `tests/integration/security_sandbox.rs`; this test target also makes `cargo test -p ratchet-kit`
//! build the binary those tests use.)

use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

use ratchet_kit::sandbox::{LAUNCHER_ERROR_PREFIX, LAUNCHER_SETUP_FAILED};

fn launcher(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ratchet-sandbox")).args(args).output().expect("the launcher runs")
}

#[test]
fn a_plan_it_cannot_apply_is_a_setup_failure_with_the_reason() {
    let out = launcher(&["--ro-root", "--ro-bind", "/nonexistent-ratchet-path", "--chdir", "/", "--", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(LAUNCHER_SETUP_FAILED), "{stderr}");
    assert!(stderr.starts_with(LAUNCHER_ERROR_PREFIX) && stderr.contains("/nonexistent-ratchet-path"), "{stderr}");
}

#[test]
fn bad_arguments_are_a_setup_failure_with_the_usage() {
    let out = launcher(&["--frobnicate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(LAUNCHER_SETUP_FAILED), "{stderr}");
    assert!(stderr.starts_with("ratchet-sandbox: bad arguments: unknown argument \"--frobnicate\""), "{stderr}");
    assert!(stderr.contains("usage: ratchet-sandbox"), "{stderr}");
}

#[test]
fn the_commands_exit_code_and_signal_come_through() {
    for base in [&["--ro-root", "--dev", "--proc", "--chdir", "/"][..], &["--report-only"]] {
        let run = |script: &str| {
            let mut args = base.to_vec();
            args.extend(["--", "sh", "-c", script]);
            launcher(&args).status
        };
        assert_eq!(run("exit 7").code(), Some(7), "{base:?}");
        assert_eq!(run("kill -TERM $$").signal(), Some(15), "{base:?}");
        // The command's own exit 125 is just an exit code.
        assert_eq!(run("exit 125").code(), Some(125), "{base:?}");
    }
}
