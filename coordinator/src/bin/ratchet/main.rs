//! `ratchet`: the swarm's command line. Each subcommand is one call into the coordinator library:
//! the arguments are in [`cli`], what each subcommand prints in [`commands`].

use std::process::ExitCode;

use clap::Parser;

/// Print a line to stdout. A reader that went away (`ratchet explain main --json | head`) ends
/// the command quietly, as a closed pipe ends any Unix tool, never with a panic.
macro_rules! out {
    ($($t:tt)*) => { $crate::emit(&format!($($t)*), true) };
}

/// [`out!`] without the newline.
macro_rules! outp {
    ($($t:tt)*) => { $crate::emit(&format!($($t)*), false) };
}

fn emit(text: &str, newline: bool) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_all(text.as_bytes())
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| o.flush());
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

mod cli;
mod commands;

use cli::{Cli, Command, ModelsCommand};
use commands::{
    approve, calibrate, check_before_loop, explain, export, gc, governance, init, inspect, reject, sandbox, status,
};
use coordinator::supervisor::{self, LoopRequest, RestartPolicy, UpOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime starts");
    let result = match cli.command {
        Command::Up { repo, once, json, no_loop, fresh, max_cycles, no_check } => {
            supervisor::human_output_to_stderr(json);
            if !no_loop
                && !no_check
                && let Err(code) = runtime.block_on(check_before_loop(&repo.repo, fresh))
            {
                return code;
            }
            let run_loop = (!no_loop).then_some(LoopRequest { max_cycles, fresh, exit_when_done: once });
            let repo_path = repo.repo.clone();
            let opts = UpOptions { repo: repo.repo, policy: RestartPolicy::default(), run_loop };
            match runtime.block_on(supervisor::up(opts)) {
                Ok(outcome) => {
                    if let Some(s) = outcome.loop_summary.filter(|_| once) {
                        if json {
                            // Through a JSON value: keys in alphabetical order, as always.
                            let v = serde_json::to_value(&s).unwrap_or_default();
                            out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                        } else {
                            // The same history `ratchet demo` prints: every candidate's line.
                            let state = coordinator::engine::read_state(&repo_path).ok().flatten();
                            supervisor::say(&match state {
                                Some(st) => coordinator::demo::render_history(&st, &s),
                                None => coordinator::demo::render_summary(&s),
                            });
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Command::Status { repo, json } => runtime.block_on(status(repo.repo, json)),
        Command::Check { repo, no_run, json } => {
            let opts = coordinator::check::Options { run_commands: !no_run, noise: !no_run };
            let r = runtime.block_on(coordinator::check::check(&repo.repo, opts));
            if json {
                out!("{}", serde_json::to_string_pretty(&r).expect("a check report serializes"));
            } else {
                outp!("{}", r.render());
            }
            return if r.ok { ExitCode::SUCCESS } else { ExitCode::from(2) };
        }
        Command::Demo { repo, json, model, with_models } => {
            let run = async {
                if model {
                    return coordinator::demo::demo_model(&repo.repo, json).await;
                }
                let models = match with_models.as_deref().map(|m| m.split_once(',')) {
                    Some(Some((w, r))) => {
                        Some(coordinator::demo::DemoModels { writer: w.to_string(), reviewer: r.to_string() })
                    }
                    Some(None) => anyhow::bail!("--with-models takes `writer_url,reviewer_url`"),
                    None => None,
                };
                coordinator::demo::demo_with(&repo.repo, json, models).await
            };
            return report(runtime.block_on(run).map(|_| ()));
        }
        Command::Explain { commit, repo, json } => return report(explain(&repo.repo, &commit, json)),
        Command::Calibrate { repo, json, measure } => return report(calibrate(&repo.repo, json, measure.as_deref())),
        Command::Inspect { branch, repo, json } => return report(inspect(&repo.repo, &branch, json)),
        Command::Gc { repo, json } => return report(gc(&repo.repo, json)),
        Command::Export { what, repo } => return report(export(&repo.repo, &what)),
        Command::Governance { repo, json } => return report(governance(&repo.repo, json)),
        Command::Approve { targets, by, repo, json } => {
            return report(approve(&repo.repo, &targets, by.as_deref(), json));
        }
        Command::Reject { target, by, repo } => return report(reject(&repo.repo, &target, by.as_deref())),
        Command::Init { force, by, repo, json } => return report(init(&repo.repo, force, by.as_deref(), json)),
        Command::Sandbox { repo, json } => return sandbox(&repo.repo, json),
        Command::Models { command: ModelsCommand::Compare { current, candidate, tasks, repo, json } } => {
            return report(runtime.block_on(async {
                let r = coordinator::models::compare(&repo.repo, &current, &candidate, tasks).await?;
                if json {
                    out!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    outp!("{}", coordinator::models::render(&r));
                }
                Ok(())
            }));
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Exit status for the commands that return `anyhow` errors.
fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
