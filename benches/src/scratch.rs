//! The benches' scratch repositories (the `ratchet-bench` binaries, and kit's benches through a
//! `#[path]` module, with `ratchet_kit` named `kit`): kit's git wrapper (hooks off, no
//! redirecting variable) with the user's and the system's configuration ignored and a fixed
//! identity.

use std::path::Path;

/// Runs git in `dir`; its stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    Ok(kit::git::Git::new(dir).without_user_config().with_identity("bench", "bench@ratchet.invalid").run(args)?)
}

/// Writes `files` (path, text) into `dir`, makes it a repository and commits everything in it
/// to `main` as `message`; returns that commit.
pub fn init(dir: &Path, files: &[(&str, &str)], message: &str) -> anyhow::Result<String> {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
        std::fs::write(path, text)?;
    }
    git(dir, &["init", "-q", "-b", "main"])?;
    commit_all(dir, message)
}

/// Commits everything in `dir` as `message`; returns the commit.
pub fn commit_all(dir: &Path, message: &str) -> anyhow::Result<String> {
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", message])?;
    git(dir, &["rev-parse", "HEAD"])
}
