//! The baseline's tests in the candidate's own checkout (ethos.md `trusted_tests`): what the
//! run of `test_command` sees is the candidate's commit with the base's files under those globs,
//! plus the candidate's build (what the BASE's ignore rules ignore), and nothing else; afterwards
//! the checkout is the candidate's again.
//!
//! A gate runs the candidate's code and may write anything in its checkout, so before the run,
//! whatever is in no commit is moved aside, outside the checkout ([`strays`]), except the build:
//! - under the globs, everything (untracked and ignored files, symlinks, nested repositories: a
//!   gate's plant or a build's output alike);
//! - elsewhere, what the base's ignore rules do not ignore: a planted root `conftest.py`,
//!   `sitecustomize.py`, `pytest.ini`, `.pth` file, or anything else a test runner loads on its
//!   own. The rules are the base commit's `.gitignore` files (never the checkout's: the candidate
//!   writes those, tracked or not) and the repository's `info/exclude` ([`BaseIgnores`]); so
//!   `target/`, `node_modules/` that the base ignores stay, and are reused. Python's bytecode
//!   caches (`__pycache__/`, `*.pyc`) go even when ignored: the interpreter would run them
//!   instead of the committed source, and remakes them cheaply.
//!
//! Then tracked files go back to the candidate's commit (a gate may have edited them), the base's
//! files the candidate changed or deleted under the globs are checked out, the ones it added
//! removed.
//!
//! After the run: tracked files back to the commit, what the run left that [`strays`] would move
//! removed, the moved files put back (never through a symlink: the executor runs unconfined).
//!
//! What this does not cover, by design: what the base ignores is the candidate's build, made by
//! its code in its gates, and is trusted as such (a gate could write into an ignored virtualenv
//! or `target/` what a build could: a `.pth` file Python runs at start); a tracked test-runner
//! file the candidate changes outside the globs is in its diff, where the critic's `test-config`
//! rail names it. Where the build must not be trusted, ethos.md `trusted_checkout = "fresh"`
//! runs the baseline's tests in a new checkout of the commit instead ([`make_fresh`]), built from
//! scratch, which nothing of the candidate's checkout reaches.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use kit::git::Git;
use protocol::governance::glob_match;

fn is_trusted(globs: &[String], path: &str) -> bool {
    globs.iter().any(|g| g == path || glob_match(g, path))
}

/// A path of the checkout in no commit, moved out of the baseline's tests' run: a file or a
/// symlink, or a nested repository moved whole (`dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    rel: PathBuf,
    dir: bool,
}

impl Stray {
    /// Its path relative to the checkout.
    pub fn path(&self) -> &Path {
        &self.rel
    }

    /// As git lists it (a nested repository with a trailing `/`), for the evidence.
    pub fn display(&self) -> String {
        format!("{}{}", self.rel.to_string_lossy(), if self.dir { "/" } else { "" })
    }
}

/// `git ls-files -z` output as strays, in git's (byte) order.
fn parse_listing(out: &[u8]) -> Vec<Stray> {
    out.split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_suffix(b"/") {
            Some(d) => Stray { rel: PathBuf::from(OsStr::from_bytes(d)), dir: true },
            None => Stray { rel: PathBuf::from(OsStr::from_bytes(p)), dir: false },
        })
        .collect()
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
/// and symlinks (never followed), and nested repositories (one entry for the whole, when the
/// globs may match anything inside), in git's order.
pub fn untracked_trusted(tree: &Path, globs: &[String]) -> Result<Vec<Stray>, String> {
    let prefixes: Vec<String> = globs.iter().map(|g| literal_prefix(g)).collect();
    // No --exclude-standard: ignored files are listed too (a candidate can ignore its plant).
    let mut args = vec!["--literal-pathspecs", "ls-files", "--others", "-z"];
    if !prefixes.iter().any(String::is_empty) {
        args.push("--");
        args.extend(prefixes.iter().map(String::as_str));
    }
    let out = Git::new(tree).run_bytes(args).map_err(|e| format!("infra: listing untracked files: {e}"))?;
    Ok(parse_listing(&out)
        .into_iter()
        .filter(|s| {
            let p = s.rel.to_string_lossy();
            if s.dir {
                is_trusted(globs, &p) || prefixes.iter().any(|pre| overlaps(pre, &p))
            } else {
                is_trusted(globs, &p)
            }
        })
        .collect())
}

/// The ignore rules of the base commit, which decide what in no commit is the candidate's build
/// (kept for the baseline's tests) and what is not (moved aside): the base's `.gitignore` files,
/// read from the commit, and the repository's `info/exclude`, merged into one exclude file for
/// `git ls-files --exclude-from` (see [`base_excludes`]). Not the checkout's `.gitignore` files
/// (the candidate writes those, in its commit or by a gate), nor a user's `core.excludesFile`.
pub struct BaseIgnores {
    file: tempfile::NamedTempFile,
}

impl BaseIgnores {
    /// The rules of `base`, for the checkout `tree` (a worktree of the same repository).
    pub fn of(tree: &Path, base: &str) -> Result<BaseIgnores, String> {
        use std::io::Write;
        let text = base_excludes(tree, base)?;
        let mut file = tempfile::Builder::new()
            .prefix("ratchet-base-ignores")
            .tempfile()
            .map_err(|e| format!("infra: a temporary file for the base's ignore rules: {e}"))?;
        file.write_all(&text).map_err(|e| format!("infra: writing the base's ignore rules: {e}"))?;
        Ok(BaseIgnores { file })
    }

    fn arg(&self) -> OsString {
        let mut a = OsString::from("--exclude-from=");
        a.push(self.file.path());
        a
    }
}

/// One exclude text, with git's own semantics, equal to the base's ignore rules: `info/exclude`
/// first (the lowest precedence), then each `.gitignore` of `base` with its patterns anchored at
/// its directory (`d/.gitignore`'s `x` becomes `/d/**/x`, its `a/b` `/d/a/b`), parents before
/// children, so that git's "the deeper file decides, and in a file the last match" is the
/// single list's "the last match decides"; then [`NEVER_BUILD`], which overrides them.
pub fn base_excludes(tree: &Path, base: &str) -> Result<Vec<u8>, String> {
    let git = Git::new(tree);
    let mut out = vec![];
    let exclude = git
        .run(["rev-parse", "--path-format=absolute", "--git-path", "info/exclude"])
        .map_err(|e| format!("infra: finding info/exclude: {e}"))?;
    match std::fs::read(&exclude) {
        Ok(text) => {
            out.extend_from_slice(&text);
            out.push(b'\n');
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("infra: reading {exclude}: {e}")),
    }
    let listing = git
        .run_bytes(["ls-tree", "-r", "-z", "--full-tree", base])
        .map_err(|e| format!("infra: listing the base's files: {e}"))?;
    // "<mode> blob <oid>\t<path>": regular files only (git reads no symlinked .gitignore).
    let mut files: Vec<(Vec<u8>, String)> = listing
        .split(|b| *b == 0)
        .filter_map(|entry| {
            let tab = entry.iter().position(|b| *b == b'\t')?;
            let (meta, path) = (std::str::from_utf8(&entry[..tab]).ok()?, &entry[tab + 1..]);
            let mut m = meta.split(' ');
            let (mode, kind, oid) = (m.next()?, m.next()?, m.next()?);
            let dir = if path == b".gitignore" { Some(&b""[..]) } else { path.strip_suffix(b"/.gitignore") };
            (kind == "blob" && mode != "120000").then_some(())?;
            Some((dir?.to_vec(), oid.to_string()))
        })
        .collect();
    files.sort_by(|a, b| (a.0.split(|c| *c == b'/').count(), &a.0).cmp(&(b.0.split(|c| *c == b'/').count(), &b.0)));
    // One `cat-file --batch` for all of them: "<oid> blob <size>\n<content>\n" each.
    let ids: String = files.iter().map(|(_, oid)| format!("{oid}\n")).collect();
    let batch = if files.is_empty() {
        vec![]
    } else {
        git.run_input(["cat-file", "--batch"], ids.as_bytes())
            .map_err(|e| format!("infra: reading the base's .gitignore files: {e}"))?
    };
    let mut rest = &batch[..];
    for (dir, oid) in files {
        let header_end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let header = String::from_utf8_lossy(&rest[..header_end]).into_owned();
        let size = match header.split(' ').collect::<Vec<_>>()[..] {
            [id, "blob", size] if id == oid => size.parse::<usize>().ok(),
            _ => None,
        };
        let text = size
            .and_then(|n| rest.get(header_end + 1..header_end + 1 + n))
            .ok_or_else(|| format!("infra: git cat-file --batch answered {header:?} for the .gitignore {oid}"))?;
        if dir.is_empty() {
            out.extend_from_slice(text);
            out.push(b'\n');
        } else {
            anchor_patterns(&dir, text, &mut out);
        }
        rest = rest.get(header_end + 1 + text.len() + 1..).unwrap_or(&[]);
    }
    out.extend_from_slice(NEVER_BUILD);
    Ok(out)
}

/// Last in the exclude text, so they win over the base's rules (outside directories the base
/// ignores as a whole, which git never enters): Python's bytecode caches. The interpreter loads
/// them instead of the source (an "unchecked-hash" `.pyc` is never compared with its source), so a
/// planted one would swap the candidate's committed code for other code; and it rebuilds them
/// from the source for the cost of a compile.
const NEVER_BUILD: &[u8] = b"!__pycache__/\n!*.pyc\n";

/// The patterns of the `.gitignore` in directory `dir` (not the top), rewritten for the top.
fn anchor_patterns(dir: &[u8], text: &[u8], out: &mut Vec<u8>) {
    let mut prefix = vec![b'/'];
    for b in dir {
        if matches!(b, b'*' | b'?' | b'[' | b'\\') {
            prefix.push(b'\\');
        }
        prefix.push(*b);
    }
    prefix.push(b'/');
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| *b == b' ') || line.starts_with(b"#") {
            continue;
        }
        let (neg, body) = match line.strip_prefix(b"!") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        // Trailing spaces are not part of a pattern unless escaped; a trailing '/' is "a
        // directory"; a '/' elsewhere anchors the pattern at its file's directory.
        let mut end = body.len();
        while end > 0 && body[end - 1] == b' ' && !(end > 1 && body[end - 2] == b'\\') {
            end -= 1;
        }
        let body = &body[..end];
        let stem = body.strip_suffix(b"/").unwrap_or(body);
        if stem.is_empty() {
            continue;
        }
        let anchored = stem.contains(&b'/');
        if neg {
            out.push(b'!');
        }
        out.extend_from_slice(&prefix);
        if anchored {
            out.extend_from_slice(body.strip_prefix(b"/").unwrap_or(body));
        } else {
            out.extend_from_slice(b"**/");
            out.extend_from_slice(body);
        }
        out.push(b'\n');
    }
}

/// What in the checkout `tree` is in no commit and is not the candidate's build: everything under
/// the globs ([`untracked_trusted`]), and elsewhere what `ignores` (the base's rules) do not
/// ignore. What the baseline's tests must not see; in git's order, a nested repository once.
pub fn strays(tree: &Path, globs: &[String], ignores: &BaseIgnores) -> Result<Vec<Stray>, String> {
    let mut out = untracked_trusted(tree, globs)?;
    let args = [OsString::from("ls-files"), "--others".into(), "-z".into(), ignores.arg()];
    let listed = Git::new(tree).run_bytes(args).map_err(|e| format!("infra: listing untracked files: {e}"))?;
    out.extend(parse_listing(&listed));
    out.sort_by(|a, b| a.rel.as_os_str().as_bytes().cmp(b.rel.as_os_str().as_bytes()));
    out.dedup();
    let dirs: Vec<PathBuf> = out.iter().filter(|s| s.dir).map(|s| s.rel.clone()).collect();
    out.retain(|s| !dirs.iter().any(|d| s.rel != *d && s.rel.starts_with(d)));
    Ok(out)
}

/// Whether the checkout is the commit as it stands for the baseline's tests: no tracked file
/// differs from HEAD and nothing is in it that [`strays`] would move aside. Only a run of
/// `test_command` on such a checkout ran the base's tests (when the candidate changed none of
/// them).
pub fn pristine(tree: &Path, base: &str, globs: &[String]) -> Result<bool, String> {
    let status = Git::new(tree)
        .run(["status", "--porcelain", "-z", "--untracked-files=no"])
        .map_err(|e| format!("infra: git status: {e}"))?;
    Ok(status.is_empty() && strays(tree, globs, &BaseIgnores::of(tree, base)?)?.is_empty())
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

/// The checkout `tree` (at the candidate commit) made ready for the baseline's tests: the
/// [`strays`] moved to `aside` (a directory of the executor's, outside the checkout, on the same
/// file system), tracked files reset to the commit, `restored` taken from `base`, `added` (the
/// candidate's own new tests) removed. Returns what was moved aside; [`restore_candidate`]
/// undoes it all.
pub fn prepare_trusted(
    tree: &Path,
    aside: &Path,
    base: &str,
    restored: &[String],
    added: &[String],
    globs: &[String],
    ignores: &BaseIgnores,
) -> Result<Vec<Stray>, String> {
    // A directory left by an attempt that died mid-run: its files were a dead gate's output.
    remove_entry(aside).map_err(|e| format!("infra: removing {}: {e}", aside.display()))?;
    let moved = strays(tree, globs, ignores)?;
    for s in &moved {
        let to = aside.join(&s.rel);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("infra: creating {}: {e}", dir.display()))?;
        }
        std::fs::rename(tree.join(&s.rel), &to).map_err(|e| format!("infra: moving {} aside: {e}", s.display()))?;
        prune_empty_parents(tree, &s.rel);
    }
    Git::new(tree)
        .run(["reset", "-q", "--hard", "HEAD"])
        .map_err(|e| format!("infra: resetting the checkout to the candidate's commit: {e}"))?;
    trusted_swap(tree, base, restored, added)?;
    Ok(moved)
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
/// HEAD (which also drops the base's files the candidate had deleted), what the run left that
/// [`strays`] would move removed, `moved` put back from `aside` (one that would land on
/// something the run made, or through a symlink, is dropped and named in the answer).
pub fn restore_candidate(
    tree: &Path,
    aside: &Path,
    moved: &[Stray],
    globs: &[String],
    ignores: &BaseIgnores,
) -> Result<Vec<Stray>, String> {
    Git::new(tree).run(["reset", "-q", "--hard", "HEAD"]).map_err(|e| format!("infra: {e}"))?;
    for s in strays(tree, globs, ignores)? {
        remove_entry(&tree.join(&s.rel)).map_err(|e| format!("infra: removing the run's {}: {e}", s.display()))?;
        prune_empty_parents(tree, &s.rel);
    }
    let mut dropped = vec![];
    for s in moved {
        let to = tree.join(&s.rel);
        let free = real_parents(tree, &s.rel).map_err(|e| format!("infra: putting {} back: {e}", s.display()))?
            && std::fs::symlink_metadata(&to).is_err();
        if free {
            std::fs::rename(aside.join(&s.rel), &to)
                .map_err(|e| format!("infra: putting {} back: {e}", s.display()))?;
        } else {
            dropped.push(s.clone());
        }
    }
    remove_entry(aside).map_err(|e| format!("infra: removing {}: {e}", aside.display()))?;
    Ok(dropped)
}

/// A fresh checkout of the candidate's `commit` at `dir` for the baseline's tests (ethos.md
/// `trusted_checkout = "fresh"`): a detached git worktree of the repository `repo` (anything left
/// at `dir` by an earlier attempt removed first), so nothing the gates wrote is in it, with the
/// base's trusted tests put in as in [`prepare_trusted`] (`restored` from `base`, `added`
/// removed). [`remove_fresh`] takes it away.
pub fn make_fresh(
    repo: &Path,
    dir: &Path,
    base: &str,
    commit: &str,
    restored: &[String],
    added: &[String],
) -> Result<(), String> {
    remove_fresh(repo, dir)?;
    let args: [&OsStr; 7] = [
        "worktree".as_ref(),
        "add".as_ref(),
        "--detach".as_ref(),
        // Twice: a registration an add killed midway left locked is overridden.
        "--force".as_ref(),
        "--force".as_ref(),
        dir.as_os_str(),
        commit.as_ref(),
    ];
    Git::new(repo).run(args).map_err(|e| format!("infra: a fresh checkout of {commit} at {}: {e}", dir.display()))?;
    trusted_swap(dir, base, restored, added)
}

/// Removes the fresh checkout at `dir` (its files, never through a symlink, and its registration
/// in `repo`); nothing there is fine.
pub fn remove_fresh(repo: &Path, dir: &Path) -> Result<(), String> {
    let git = Git::new(repo);
    if std::fs::symlink_metadata(dir).is_ok() {
        let args: [&OsStr; 5] =
            ["worktree".as_ref(), "remove".as_ref(), "--force".as_ref(), "--force".as_ref(), dir.as_os_str()];
        // A directory git does not know (a crash before the registration) is removed below.
        let _ = git.run(args);
        remove_entry(dir).map_err(|e| format!("infra: removing the fresh checkout {}: {e}", dir.display()))?;
    }
    git.run(["worktree", "prune"]).map_err(|e| format!("infra: git worktree prune: {e}"))?;
    Ok(())
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

    fn shown(strays: &[Stray]) -> Vec<String> {
        strays.iter().map(Stray::display).collect()
    }

    /// A base and a candidate commit in `tree`: (base, candidate).
    fn repo(tree: &Path) -> (String, String) {
        git(tree, &["init", "-q", "-b", "main"]);
        write(tree, "src/a.sh", "a\n");
        write(tree, "tests/test_kept.sh", "kept\n");
        write(tree, "tests/test_weakened.sh", "strict\n");
        write(tree, "tests/test_deleted.sh", "deleted\n");
        write(tree, ".gitignore", "target/\nvendor\n");
        git(tree, &["add", "-A"]);
        git(tree, &["commit", "-qm", "base"]);
        let base = git(tree, &["rev-parse", "HEAD"]);
        write(tree, "src/a.sh", "b\n");
        write(tree, "tests/test_weakened.sh", "lax\n");
        write(tree, "tests/test_added.sh", "added\n");
        write(tree, ".gitignore", "target/\nvendor\ntests/cache/\n");
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

        write(tree, "target/x.o", "a build output the base ignores\n");
        let ignores = BaseIgnores::of(tree, &base).unwrap();
        let moved = prepare_trusted(tree, aside, &base, &restored, &set_aside, &globs, &ignores).unwrap();
        assert_eq!(shown(&moved), ["build.out"], "in no commit, not ignored by the base: out of the run");
        assert_eq!(read(tree, "build.out"), None);
        assert_eq!(read(tree, "target/x.o").as_deref(), Some("a build output the base ignores\n"));
        assert_eq!(read(tree, "tests/test_weakened.sh").as_deref(), Some("strict\n"));
        assert_eq!(read(tree, "tests/test_deleted.sh").as_deref(), Some("deleted\n"));
        assert_eq!(read(tree, "tests/test_added.sh"), None);
        assert_eq!(read(tree, "src/a.sh").as_deref(), Some("b\n"), "the candidate's code stays");

        assert_eq!(restore_candidate(tree, aside, &moved, &globs, &ignores).unwrap(), vec![]);
        assert_eq!(git(tree, &["status", "--porcelain"]), "?? build.out", "back to the candidate");
        assert_eq!(read(tree, "target/x.o").as_deref(), Some("a build output the base ignores\n"), "build kept");
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
        assert!(pristine(tree, &base, &globs).unwrap());

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
        write(tree, "vendor/test_v.py", "under the globs, in a directory the base ignores\n");
        write(tree, "vendor/lib.so", "a build output\n");
        assert!(!pristine(tree, &base, &globs).unwrap());

        let (restored, added) = trusted_changes(tree, &base, &commit, &globs).unwrap();
        let ignores = BaseIgnores::of(tree, &base).unwrap();
        let moved = prepare_trusted(tree, aside, &base, &restored, &added, &globs, &ignores).unwrap();
        assert_eq!(
            shown(&moved),
            [
                "pkg/other.txt",
                "pkg/test_go.py",
                "tests/cache/test_ignored.sh",
                "tests/deep/er/conftest.py",
                "tests/link",
                "tests/nested/",
                "tests/test_planted.sh",
                "vendor/test_v.py"
            ]
        );
        // The run sees exactly the base's tests over the candidate's commit.
        let mut seen: Vec<String> = git(tree, &["ls-files", "-o", "-z"]).split('\0').map(String::from).collect();
        seen.retain(|p| !p.is_empty());
        assert_eq!(seen, ["target/build.out", "vendor/lib.so"], "only what the base ignores outside the globs stays");
        assert!(!tree.join("tests/deep").exists(), "no empty directory left from a plant");
        assert_eq!(read(tree, "tests/test_kept.sh").as_deref(), Some("kept\n"), "a gate's edit is undone");
        assert_eq!(read(outside, "secret").as_deref(), Some("outside\n"), "a symlink is moved, not followed");

        // The run writes a cache of its own, and a symlink where a moved file's directory was.
        write(tree, "tests/cache/run.pyc", "the run's\n");
        std::fs::remove_dir(tree.join("tests/deep")).ok();
        std::os::unix::fs::symlink(outside, tree.join("tests/deep")).unwrap();
        std::os::unix::fs::symlink(outside, tree.join("pkg")).unwrap();
        std::fs::remove_dir_all(tree.join("vendor")).unwrap();
        std::os::unix::fs::symlink(outside, tree.join("vendor")).unwrap();

        let dropped = restore_candidate(tree, aside, &moved, &globs, &ignores).unwrap();
        // tests/deep and pkg are the run's (in no commit, not ignored by the base): removed, so
        // what was moved from there goes back; vendor is ignored by the base, so the run's
        // symlink stays, and nothing is written through it.
        assert_eq!(shown(&dropped), ["vendor/test_v.py"]);
        assert_eq!(read(tree, "pkg/test_go.py").as_deref(), Some("planted outside tests/\n"));
        assert_eq!(read(tree, "pkg/other.txt").as_deref(), Some("not a test\n"));
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

    /// Outside the trusted globs, what a test runner loads on its own and a gate planted (a root
    /// `conftest.py`, `pytest.ini`, `sitecustomize.py`, a `.pth`, a directory hidden by its own
    /// `.gitignore`) is out of the run even when the candidate's `.gitignore` ignores it; the
    /// build the base ignores (`/target`, `__pycache__/`, a subdirectory's `build/`) stays.
    #[test]
    fn what_the_base_does_not_ignore_is_out_of_the_run_and_its_build_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, aside) = (&dir.path().join("tree"), &dir.path().join("aside"));
        std::fs::create_dir_all(tree).unwrap();
        git(tree, &["init", "-q", "-b", "main"]);
        write(tree, ".gitignore", "/target\n*.pyc\n__pycache__/\n!keep.pyc\n");
        write(tree, "py/.gitignore", "build/\n/local.cfg\n");
        write(tree, "py/mod.py", "x = 1\n");
        write(tree, "tests/test_a.py", "assert True\n");
        git(tree, &["add", "-A"]);
        git(tree, &["commit", "-qm", "base"]);
        let base = git(tree, &["rev-parse", "HEAD"]);
        // The candidate ignores its plants in its own commit, and its gate plants them.
        write(tree, ".gitignore", "/target\n*.pyc\n__pycache__/\n!keep.pyc\nconftest.py\n*.ini\nsite*\n");
        write(tree, "py/mod.py", "x = 2\n");
        git(tree, &["commit", "-qam", "candidate"]);
        // Bytecode caches are never the build (outside directories the base ignores whole).
        let planted = [
            "__pycache__/mod.cpython-311.pyc",
            "a.pyc",
            "conftest.py",
            "deep/.gitignore",
            "deep/conftest.py",
            "keep.pyc",
            "py/__pycache__/x.pyc",
            "py/conftest.py",
            "py/sub/local.cfg",
            "pytest.ini",
            "site/evil.pth",
            "sitecustomize.py",
        ];
        for p in planted {
            write(tree, p, if p == "deep/.gitignore" { "*\n" } else { "planted\n" });
        }
        let build =
            ["target/debug/app", "target/m.pyc", "py/build/lib.so", "py/build/__pycache__/b.pyc", "py/local.cfg"];
        for p in build {
            write(tree, p, "built\n");
        }
        // A name that is not UTF-8 is moved like any other (git lists bytes).
        let odd = std::ffi::OsStr::from_bytes(b"odd\xff.py");
        std::fs::write(tree.join(odd), "planted\n").unwrap();
        let globs = vec!["tests/**".to_string()];
        assert!(!pristine(tree, &base, &globs).unwrap());
        let ignores = BaseIgnores::of(tree, &base).unwrap();
        let moved = prepare_trusted(tree, aside, &base, &[], &[], &globs, &ignores).unwrap();
        let (odd_moved, moved_named): (Vec<Stray>, Vec<Stray>) =
            moved.iter().cloned().partition(|s| s.path().as_os_str() == odd);
        assert_eq!(shown(&odd_moved), ["odd\u{fffd}.py"]);
        assert!(!tree.join(odd).exists());
        assert_eq!(shown(&moved_named), planted);
        for p in planted {
            assert_eq!(read(tree, p), None, "{p} is out of the run");
        }
        for p in build {
            assert_eq!(read(tree, p).as_deref(), Some("built\n"), "{p} is the build the base ignores");
        }
        assert!(pristine(tree, &base, &globs).unwrap(), "nothing left but the build");
        // The run writes a cache the base does not ignore and one it does.
        write(tree, ".pytest_cache/v/lastfailed", "{}\n");
        write(tree, "tests/__pycache__/test_a.pyc", "the run's\n");
        assert_eq!(restore_candidate(tree, aside, &moved, &globs, &ignores).unwrap(), vec![]);
        for p in planted {
            assert!(read(tree, p).is_some(), "{p} is back");
        }
        assert!(tree.join(odd).exists(), "the odd name is back");
        assert!(!tree.join(".pytest_cache").exists() && !tree.join("tests/__pycache__").exists(), "the run's");
        assert_eq!(read(tree, "py/mod.py").as_deref(), Some("x = 2\n"));
    }

    /// The merged exclude text means what git means by the base's `.gitignore` files and
    /// `info/exclude`: on a checkout of the base itself, what it lets through is exactly what
    /// `git ls-files --others --exclude-standard` lists (negations, directory-only patterns,
    /// anchors in subdirectories, `**`, escapes, a directory named like a glob).
    #[test]
    fn the_base_ignores_mean_what_git_means() {
        let dir = tempfile::tempdir().unwrap();
        let tree = &dir.path().join("tree");
        std::fs::create_dir_all(tree).unwrap();
        git(tree, &["init", "-q", "-b", "main"]);
        write(tree, ".gitignore", "# build\n*.o\n!keep.o\nout/\n/top.log\ndoc/**/*.tmp\n\\#hash\nspace\\ \ntrail   \n");
        write(tree, "a/.gitignore", "*.log\n!/a/x.log\n/only-here\nsub/gen\nlib/\n**/cache\n");
        write(tree, "a/b/.gitignore", "!*.log\nnope/\n");
        write(tree, "we[ird]/.gitignore", "*.x\n");
        write(tree, "we[ird]/t", "tracked\n");
        write(tree, "a/t", "tracked\n");
        git(tree, &["add", "-A"]);
        git(tree, &["commit", "-qm", "base"]);
        let base = git(tree, &["rev-parse", "HEAD"]);
        std::fs::write(tree.join(".git/info/exclude"), "*.secret\n").unwrap();
        for p in [
            "x.o",
            "keep.o",
            "d/keep.o",
            "out/f",
            "a/out/f",
            "top.log",
            "a/top.log",
            "doc/a/b/c.tmp",
            "c.tmp",
            "#hash",
            "space ",
            "trail",
            "a/y.log",
            "a/x.log",
            "a/c/z.log",
            "a/b/w.log",
            "a/b/c/v.log",
            "a/only-here",
            "a/c/only-here",
            "a/sub/gen",
            "a/c/sub/gen",
            "a/lib/l",
            "lib/l",
            "a/c/cache/f",
            "cache/f",
            "a/b/nope/f",
            "nope/f",
            "we[ird]/y.x",
            "weid/y.x",
            "z.x",
            "k.secret",
            "a/k.secret",
            "plain",
        ] {
            write(tree, p, "x\n");
        }
        let git_says = Git::new(tree)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .run_bytes(["ls-files", "--others", "-z", "--exclude-standard"])
            .unwrap();
        let ours = strays(tree, &[], &BaseIgnores::of(tree, &base).unwrap()).unwrap();
        let git_says = shown(&parse_listing(&git_says));
        assert!(git_says.contains(&"plain".to_string()) && !git_says.contains(&"x.o".to_string()), "{git_says:?}");
        assert_eq!(shown(&ours), git_says);
    }

    /// A fresh checkout has the candidate's commit with the base's tests and nothing else of the
    /// candidate's checkout (its build, a plant in it, an untracked file); what an earlier
    /// attempt left where it goes is replaced; removing it leaves no directory and no
    /// registration.
    #[test]
    fn a_fresh_checkout_is_the_commit_with_the_base_tests_and_nothing_of_the_gates() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, fresh) = (&dir.path().join("tree"), &dir.path().join("branch/fresh"));
        std::fs::create_dir(tree).unwrap();
        let (base, commit) = repo(tree);
        write(tree, "target/release/app", "the gates' build\n");
        write(tree, "vendor/lib/site-packages/zz.pth", "import planted\n");
        write(tree, "build.out", "untracked\n");
        let globs = vec!["tests/**".to_string()];
        let (restored, added) = trusted_changes(tree, &base, &commit, &globs).unwrap();
        // An attempt that died left a directory there.
        write(fresh, "left/over", "a dead attempt's\n");
        make_fresh(tree, fresh, &base, &commit, &restored, &added).unwrap();
        assert_eq!(read(fresh, "src/a.sh").as_deref(), Some("b\n"), "the candidate's code");
        assert_eq!(read(fresh, "tests/test_weakened.sh").as_deref(), Some("strict\n"), "the base's test");
        assert_eq!(read(fresh, "tests/test_deleted.sh").as_deref(), Some("deleted\n"));
        assert_eq!(read(fresh, "tests/test_added.sh"), None, "the candidate's own test is out");
        for p in ["target", "vendor", "build.out", "left"] {
            assert!(!fresh.join(p).exists(), "{p} is not in a fresh checkout");
        }
        assert_eq!(git(fresh, &["rev-parse", "HEAD"]), commit);
        let listed =
            |path: &Path| git(tree, &["worktree", "list", "--porcelain"]).contains(&path.display().to_string());
        let fresh_real = fresh.canonicalize().unwrap();
        assert!(listed(&fresh_real));
        // The candidate's checkout is as it was.
        assert_eq!(read(tree, "vendor/lib/site-packages/zz.pth").as_deref(), Some("import planted\n"));
        assert_eq!(read(tree, "tests/test_weakened.sh").as_deref(), Some("lax\n"));
        remove_fresh(tree, fresh).unwrap();
        assert!(!fresh.exists() && !listed(&fresh_real));
        remove_fresh(tree, fresh).unwrap();
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
