//! The baseline's tests in the candidate's own checkout (ethos.md `trusted_tests`): what the
//! run of `test_command` sees under those globs is exactly the base's files, and afterwards the
//! checkout is the candidate's again.
//!
//! A gate runs the candidate's code and may write anything in its checkout, so before the run:
//! - whatever is under the globs but in no commit (untracked and ignored files, symlinks, nested
//!   repositories: a gate's plant or a build's output) is moved aside, outside the checkout;
//! - tracked files go back to the candidate's commit (a gate may have edited them);
//! - the base's files the candidate changed or deleted are checked out, the ones it added removed.
//!
//! After the run: tracked files back to the commit, what the run left under the globs removed,
//! the moved files put back (never through a symlink: the executor runs unconfined).

use std::path::{Component, Path};

use kit::git::Git;
use protocol::governance::glob_match;

fn is_trusted(globs: &[String], path: &str) -> bool {
    globs.iter().any(|g| g == path || glob_match(g, path))
}

/// The directory a glob's matches all lie under ("tests/**" -> "tests", "**/x_test.go" -> ""):
/// its leading components without a wildcard (the whole of a glob without one).
fn literal_prefix(glob: &str) -> String {
    let comps: Vec<&str> = glob.trim_start_matches("./").split('/').filter(|c| !c.is_empty()).collect();
    let wild = |c: &&str| c.contains(['*', '?']);
    let dirs = if glob.ends_with('/') || !comps.iter().any(wild) { comps.len() } else { comps.len() - 1 };
    comps[..dirs].iter().take_while(|c| !wild(c)).copied().collect::<Vec<_>>().join("/")
}

/// Whether `dir` and `prefix` (both relative, "" the whole tree) are one inside the other.
fn overlaps(prefix: &str, dir: &str) -> bool {
    let under = |a: &str, b: &str| b.is_empty() || a == b || a.starts_with(&format!("{b}/"));
    under(dir, prefix) || under(prefix, dir)
}

/// What is in the checkout `tree` under the globs but in no commit: untracked and ignored files
/// and symlinks (never followed), and nested repositories as `dir/` (one entry for the whole, when
/// the globs may match anything inside). Relative paths, in git's order.
pub fn untracked_trusted(tree: &Path, globs: &[String]) -> Result<Vec<String>, String> {
    let prefixes: Vec<String> = globs.iter().map(|g| literal_prefix(g)).collect();
    // No --exclude-standard: ignored files are listed too (a candidate can ignore its plant).
    let mut args = vec!["--literal-pathspecs", "ls-files", "--others", "-z"];
    if !prefixes.iter().any(String::is_empty) {
        args.push("--");
        args.extend(prefixes.iter().map(String::as_str));
    }
    let out = Git::new(tree).run(args).map_err(|e| format!("infra: listing untracked files: {e}"))?;
    Ok(out
        .split('\0')
        .filter(|p| !p.is_empty())
        .filter(|p| match p.strip_suffix('/') {
            Some(dir) => is_trusted(globs, dir) || prefixes.iter().any(|pre| overlaps(pre, dir)),
            None => is_trusted(globs, p),
        })
        .map(String::from)
        .collect())
}

/// Whether the checkout is the commit as it stands for the baseline's tests: no tracked file
/// differs from HEAD and nothing untracked is under the globs. Only a run of `test_command` on
/// such a checkout ran the base's tests (when the candidate changed none of them).
pub fn pristine(tree: &Path, globs: &[String]) -> Result<bool, String> {
    let status = Git::new(tree)
        .run(["status", "--porcelain", "-z", "--untracked-files=no"])
        .map_err(|e| format!("infra: git status: {e}"))?;
    Ok(status.is_empty() && untracked_trusted(tree, globs)?.is_empty())
}

/// The files of ethos.md `trusted_tests` that the candidate changed, in its checkout `tree`:
/// (the base's files it changed or deleted, the files it added).
pub fn trusted_changes(
    tree: &Path,
    base: &str,
    commit: &str,
    globs: &[String],
) -> Result<(Vec<String>, Vec<String>), String> {
    let git = Git::new(tree);
    let listed = |rev: &str| -> Result<Vec<String>, String> {
        let out = git.run(["ls-tree", "-r", "-z", "--name-only", rev]).map_err(|e| format!("infra: {e}"))?;
        Ok(out.split('\0').filter(|p| !p.is_empty() && is_trusted(globs, p)).map(String::from).collect())
    };
    let in_base = listed(base)?;
    let changed = git
        .run(["diff", "--no-renames", "--name-only", "-z", base, commit, "--"])
        .map_err(|e| format!("infra: {e}"))?;
    let changed: Vec<&str> = changed.split('\0').filter(|p| !p.is_empty() && is_trusted(globs, p)).collect();
    let restored = changed.iter().filter(|p| in_base.iter().any(|b| b == *p)).map(|p| p.to_string()).collect();
    let added = changed.iter().filter(|p| !in_base.iter().any(|b| b == *p)).map(|p| p.to_string()).collect();
    Ok((restored, added))
}

/// Removes the directories left empty above `rel` in `tree` (up to, not including, `tree`).
fn prune_empty_parents(tree: &Path, rel: &Path) {
    let mut dir = rel.parent();
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
        if std::fs::remove_dir(tree.join(d)).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Removes `path` itself (a symlink is removed, never followed).
fn remove_entry(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the parent directories of `rel` inside `tree` as real directories; false when one of
/// them is something else (a symlink, a file), so that nothing is written through it.
fn real_parents(tree: &Path, rel: &Path) -> std::io::Result<bool> {
    let mut dir = tree.to_path_buf();
    for c in rel.parent().into_iter().flat_map(Path::components) {
        if !matches!(c, Component::Normal(_)) {
            return Ok(false);
        }
        dir.push(c);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&dir)?,
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The checkout `tree` (at the candidate commit) made ready for the baseline's tests: what is
/// under `globs` in no commit moved to `aside` (a directory of the executor's, outside the
/// checkout, on the same file system), tracked files reset to the commit, `restored` taken from
/// `base`, `added` (the candidate's own new tests) removed. Returns what was moved aside;
/// [`restore_candidate`] undoes it all.
pub fn prepare_trusted(
    tree: &Path,
    aside: &Path,
    base: &str,
    restored: &[String],
    added: &[String],
    globs: &[String],
) -> Result<Vec<String>, String> {
    // A directory left by an attempt that died mid-run: its files were a dead gate's output.
    remove_entry(aside).map_err(|e| format!("infra: removing {}: {e}", aside.display()))?;
    let untracked = untracked_trusted(tree, globs)?;
    for p in &untracked {
        let rel = Path::new(p.trim_end_matches('/'));
        let to = aside.join(rel);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("infra: creating {}: {e}", dir.display()))?;
        }
        std::fs::rename(tree.join(rel), &to).map_err(|e| format!("infra: moving {p} aside: {e}"))?;
        prune_empty_parents(tree, rel);
    }
    Git::new(tree)
        .run(["reset", "-q", "--hard", "HEAD"])
        .map_err(|e| format!("infra: resetting the checkout to the candidate's commit: {e}"))?;
    trusted_swap(tree, base, restored, added)?;
    Ok(untracked)
}

/// Put the base's trusted tests in the candidate's checkout `tree` (at the candidate commit):
/// `restored` back as the base has them, `set_aside` (the candidate's own additions) removed.
fn trusted_swap(tree: &Path, base: &str, restored: &[String], set_aside: &[String]) -> Result<(), String> {
    for p in set_aside {
        let path = tree.join(p);
        std::fs::remove_file(&path).map_err(|e| format!("infra: setting {} aside: {e}", path.display()))?;
    }
    if !restored.is_empty() {
        let mut args = vec!["--literal-pathspecs", "checkout", base, "--"];
        args.extend(restored.iter().map(String::as_str));
        Git::new(tree).run(args).map_err(|e| format!("infra: taking the base's trusted tests: {e}"))?;
    }
    Ok(())
}

/// Back to the candidate's own files after [`prepare_trusted`]: tracked files and index reset to
/// HEAD (which also drops the base's files the candidate had deleted), what the run left under
/// `globs` removed, `untracked` moved back from `aside` (one that would land on something the
/// run made, or through a symlink, is dropped and named in the answer).
pub fn restore_candidate(
    tree: &Path,
    aside: &Path,
    untracked: &[String],
    globs: &[String],
) -> Result<Vec<String>, String> {
    Git::new(tree).run(["reset", "-q", "--hard", "HEAD"]).map_err(|e| format!("infra: {e}"))?;
    for p in untracked_trusted(tree, globs)? {
        let rel = Path::new(p.trim_end_matches('/'));
        remove_entry(&tree.join(rel)).map_err(|e| format!("infra: removing the run's {p}: {e}"))?;
        prune_empty_parents(tree, rel);
    }
    let mut dropped = vec![];
    for p in untracked {
        let rel = Path::new(p.trim_end_matches('/'));
        let to = tree.join(rel);
        let free = real_parents(tree, rel).map_err(|e| format!("infra: putting {p} back: {e}"))?
            && std::fs::symlink_metadata(&to).is_err();
        if free {
            std::fs::rename(aside.join(rel), &to).map_err(|e| format!("infra: putting {p} back: {e}"))?;
        } else {
            dropped.push(p.clone());
        }
    }
    remove_entry(aside).map_err(|e| format!("infra: removing {}: {e}", aside.display()))?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        Git::new(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .with_identity("t", "t@t")
            .run(args)
            .unwrap_or_else(|e| panic!("git {args:?}: {e}"))
    }

    fn write(tree: &Path, p: &str, t: &str) {
        std::fs::create_dir_all(tree.join(p).parent().unwrap()).unwrap();
        std::fs::write(tree.join(p), t).unwrap();
    }

    fn read(tree: &Path, p: &str) -> Option<String> {
        std::fs::read_to_string(tree.join(p)).ok()
    }

    /// A base and a candidate commit in `tree`: (base, candidate).
    fn repo(tree: &Path) -> (String, String) {
        git(tree, &["init", "-q", "-b", "main"]);
        write(tree, "src/a.sh", "a\n");
        write(tree, "tests/test_kept.sh", "kept\n");
        write(tree, "tests/test_weakened.sh", "strict\n");
        write(tree, "tests/test_deleted.sh", "deleted\n");
        git(tree, &["add", "-A"]);
        git(tree, &["commit", "-qm", "base"]);
        let base = git(tree, &["rev-parse", "HEAD"]);
        write(tree, "src/a.sh", "b\n");
        write(tree, "tests/test_weakened.sh", "lax\n");
        write(tree, "tests/test_added.sh", "added\n");
        write(tree, ".gitignore", "tests/cache/\n");
        std::fs::remove_file(tree.join("tests/test_deleted.sh")).unwrap();
        git(tree, &["add", "-A"]);
        git(tree, &["commit", "-qm", "candidate"]);
        (base, git(tree, &["rev-parse", "HEAD"]))
    }

    /// The baseline's tests go in exactly, and the candidate's files come back exactly.
    #[test]
    fn the_trusted_swap_puts_the_base_tests_in_and_takes_them_out() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, aside) = (&dir.path().join("tree"), &dir.path().join("aside"));
        std::fs::create_dir(tree).unwrap();
        let (base, commit) = repo(tree);
        write(tree, "build.out", "an untracked build output\n");

        let globs = vec!["tests/**".to_string()];
        let (restored, set_aside) = trusted_changes(tree, &base, &commit, &globs).unwrap();
        assert_eq!(restored, ["tests/test_deleted.sh", "tests/test_weakened.sh"]);
        assert_eq!(set_aside, ["tests/test_added.sh"]);

        let untracked = prepare_trusted(tree, aside, &base, &restored, &set_aside, &globs).unwrap();
        assert!(untracked.is_empty(), "{untracked:?}");
        assert_eq!(read(tree, "tests/test_weakened.sh").as_deref(), Some("strict\n"));
        assert_eq!(read(tree, "tests/test_deleted.sh").as_deref(), Some("deleted\n"));
        assert_eq!(read(tree, "tests/test_added.sh"), None);
        assert_eq!(read(tree, "src/a.sh").as_deref(), Some("b\n"), "the candidate's code stays");

        assert_eq!(restore_candidate(tree, aside, &untracked, &globs).unwrap(), Vec::<String>::new());
        assert_eq!(git(tree, &["status", "--porcelain"]), "?? build.out", "back to the candidate, build kept");
        assert_eq!(read(tree, "tests/test_weakened.sh").as_deref(), Some("lax\n"));
        assert_eq!(read(tree, "tests/test_deleted.sh"), None);
        assert_eq!(read(tree, "tests/test_added.sh").as_deref(), Some("added\n"));

        // A candidate that changes no test: nothing to swap.
        assert_eq!(trusted_changes(tree, &base, &base, &globs).unwrap(), (vec![], vec![]));
    }

    /// What gates wrote under the trusted paths (an untracked test, an ignored one, a whole
    /// directory, a symlink out of the checkout, a nested repository, an edit of a tracked test) is
    /// out of the run, and back afterwards; what the run itself wrote there is gone.
    #[test]
    fn what_a_gate_planted_under_the_trusted_paths_is_out_of_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, aside, outside) = (&dir.path().join("tree"), &dir.path().join("aside"), &dir.path().join("out"));
        std::fs::create_dir_all(tree).unwrap();
        std::fs::create_dir_all(outside).unwrap();
        write(outside, "secret", "outside\n");
        let (base, commit) = repo(tree);
        let globs = vec!["tests/**".to_string(), "**/test_*.py".to_string()];
        assert!(pristine(tree, &globs).unwrap());

        // The gates' doing.
        write(tree, "tests/test_planted.sh", "exit 0\n");
        write(tree, "tests/cache/test_ignored.sh", "exit 0\n");
        write(tree, "tests/deep/er/conftest.py", "skip everything\n");
        write(tree, "pkg/test_go.py", "planted outside tests/\n");
        write(tree, "pkg/other.txt", "not a test\n");
        std::os::unix::fs::symlink(outside, tree.join("tests/link")).unwrap();
        write(tree, "tests/nested/test_n.sh", "exit 0\n");
        git(&tree.join("tests/nested"), &["init", "-q"]);
        write(tree, "tests/test_kept.sh", "weakened by a gate\n");
        write(tree, "target/build.out", "a build output\n");
        assert!(!pristine(tree, &globs).unwrap());

        let (restored, added) = trusted_changes(tree, &base, &commit, &globs).unwrap();
        let untracked = prepare_trusted(tree, aside, &base, &restored, &added, &globs).unwrap();
        assert_eq!(
            untracked,
            [
                "pkg/test_go.py",
                "tests/cache/test_ignored.sh",
                "tests/deep/er/conftest.py",
                "tests/link",
                "tests/nested/",
                "tests/test_planted.sh"
            ]
        );
        // The run sees exactly the base's tests over the candidate's commit.
        let mut seen: Vec<String> = git(tree, &["ls-files", "-o", "-z"]).split('\0').map(String::from).collect();
        seen.retain(|p| !p.is_empty());
        assert_eq!(seen, ["pkg/other.txt", "target/build.out"], "only what is outside the globs stays");
        assert!(!tree.join("tests/deep").exists(), "no empty directory left from a plant");
        assert_eq!(read(tree, "tests/test_kept.sh").as_deref(), Some("kept\n"), "a gate's edit is undone");
        assert_eq!(read(outside, "secret").as_deref(), Some("outside\n"), "a symlink is moved, not followed");

        // The run writes a cache of its own, and a symlink where a moved file's directory was.
        write(tree, "tests/cache/run.pyc", "the run's\n");
        std::fs::remove_dir(tree.join("tests/deep")).ok();
        std::os::unix::fs::symlink(outside, tree.join("tests/deep")).unwrap();
        std::fs::remove_file(tree.join("pkg/other.txt")).unwrap();
        std::fs::remove_dir(tree.join("pkg")).unwrap();
        std::os::unix::fs::symlink(outside, tree.join("pkg")).unwrap();

        let dropped = restore_candidate(tree, aside, &untracked, &globs).unwrap();
        // tests/deep was the run's (under the globs): removed, so the conftest goes back; pkg
        // is outside them and a symlink now: nothing is written through it.
        assert_eq!(dropped, ["pkg/test_go.py"]);
        assert_eq!(std::fs::read_dir(outside).unwrap().count(), 1, "nothing written outside the checkout");
        assert_eq!(read(tree, "tests/test_planted.sh").as_deref(), Some("exit 0\n"));
        assert_eq!(read(tree, "tests/cache/test_ignored.sh").as_deref(), Some("exit 0\n"));
        assert_eq!(read(tree, "tests/cache/run.pyc"), None, "the run's own output is gone");
        assert_eq!(read(tree, "tests/deep/er/conftest.py").as_deref(), Some("skip everything\n"));
        assert!(tree.join("tests/link").symlink_metadata().unwrap().file_type().is_symlink());
        assert!(tree.join("tests/nested/.git").is_dir());
        assert_eq!(read(tree, "tests/test_added.sh").as_deref(), Some("added\n"));
        assert!(!aside.exists());
    }

    #[test]
    fn a_glob_limits_the_walk_to_its_literal_directory() {
        assert_eq!(literal_prefix("tests/**"), "tests");
        assert_eq!(literal_prefix("tests/unit/*.rs"), "tests/unit");
        assert_eq!(literal_prefix("tests/"), "tests");
        assert_eq!(literal_prefix("spec/helper.rb"), "spec/helper.rb");
        assert_eq!(literal_prefix("**/*_test.go"), "");
        assert_eq!(literal_prefix("*.md"), "");
        assert!(overlaps("", "vendor/x"));
        assert!(overlaps("tests", "tests/nested"));
        assert!(overlaps("tests/unit", "tests"));
        assert!(!overlaps("tests", "testsuite"));
    }
}
