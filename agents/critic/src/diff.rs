//! The diff model: which files a candidate changed, by how much, and where (hunks with line numbers).
//!
//! Built from three `git diff` calls over the same two trees with the same options, so their entries come
//! in the same order: `--name-status -z` (status, renames), `--numstat -z` (line counts, binary) and
//! `-U0` (hunks, so findings can cite `file:line`).

use std::path::Path;

use serde::Serialize;

use crate::CriticError;
use crate::git::git;

/// Options shared by every diff call, so the three listings agree (and user config cannot change them).
const DIFF_OPTS: [&str; 6] =
    ["--no-ext-diff", "--no-textconv", "--no-color", "-M", "--src-prefix=a/", "--dst-prefix=b/"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    Added,
    Modified,
    Deleted,
    Renamed,
    Copied,
    /// File type changed (regular file, symlink, submodule).
    TypeChanged,
    Other,
}

impl ChangeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeStatus::Added => "added",
            ChangeStatus::Modified => "modified",
            ChangeStatus::Deleted => "deleted",
            ChangeStatus::Renamed => "renamed",
            ChangeStatus::Copied => "copied",
            ChangeStatus::TypeChanged => "type changed",
            ChangeStatus::Other => "changed",
        }
    }
}

/// One changed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// Path in the candidate commit (for a deletion: in the parent).
    pub path: String,
    /// The path in the parent, for renames and copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    pub status: ChangeStatus,
    pub added: u64,
    pub removed: u64,
    /// Git sees a binary file: no line counts and no hunks.
    pub binary: bool,
    /// Zero-context hunks, in file order.
    pub hunks: Vec<Hunk>,
}

/// A zero-context hunk: `@@ -old_start,old_lines +new_start,new_lines @@`. When `old_lines` is 0 the hunk
/// inserts after line `old_start` of the parent; when `new_lines` is 0 it deletes and `new_start` is the
/// line of the candidate's file after which the deleted lines were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hunk {
    pub old_start: u32,
    pub old_lines: u32,
    pub new_start: u32,
    pub new_lines: u32,
    /// The parent's lines this hunk removes (without the `-` and the line end).
    pub removed: Vec<String>,
    /// The candidate's lines this hunk adds (without the `+` and the line end).
    pub added: Vec<String>,
    /// The last added line has no line end (`\ No newline at end of file`).
    pub added_no_eol: bool,
}

impl Hunk {
    pub fn header(&self) -> String {
        format!("@@ -{},{} +{},{} @@", self.old_start, self.old_lines, self.new_start, self.new_lines)
    }

    /// The line a finding about this hunk cites: the first added line in the candidate's file, or for a
    /// pure deletion the first removed line in the parent's file.
    pub fn line(&self) -> u32 {
        if self.new_lines > 0 { self.new_start } else { self.old_start.max(1) }
    }
}

impl FileChange {
    /// Every path this change touches: the path, and the old path of a rename or copy.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.path.as_str()).chain(self.old_path.as_deref())
    }

    /// The line to cite for this file: its first hunk's (see [`Hunk::line`]); `None` for binary files and
    /// for renames or mode changes without content changes, which have no lines.
    pub fn first_line(&self) -> Option<u32> {
        self.hunks.first().map(Hunk::line)
    }

    /// A short excerpt of the change for a finding's evidence: the status and the first hunk, at most
    /// `max_lines` lines of it.
    pub fn excerpt(&self, max_lines: usize) -> String {
        let mut out = match (&self.status, &self.old_path) {
            (ChangeStatus::Renamed, Some(old)) => format!("{} (renamed from {old})", self.path),
            (status, _) => format!("{} ({})", self.path, status.as_str()),
        };
        if self.binary {
            out.push_str(": binary file");
            return out;
        }
        out.push_str(&format!(": +{} -{}", self.added, self.removed));
        if let Some(h) = self.hunks.first() {
            out.push('\n');
            out.push_str(&h.header());
            let lines = h.removed.iter().map(|l| format!("-{l}")).chain(h.added.iter().map(|l| format!("+{l}")));
            let lines: Vec<String> = lines.collect();
            for l in lines.iter().take(max_lines) {
                out.push('\n');
                out.push_str(&truncate(l, 160));
            }
            if lines.len() > max_lines {
                out.push_str(&format!("\n... {} more lines", lines.len() - max_lines));
            }
        }
        out
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}...", s.chars().take(max).collect::<String>()) }
}

/// The files changed between `parent` and `commit` (both resolved commit ids or revisions), in git's order.
pub fn diff_files(repo: &Path, parent: &str, commit: &str) -> Result<Vec<FileChange>, CriticError> {
    let call = |extra: &[&str]| {
        let mut args = vec!["diff"];
        args.extend(DIFF_OPTS);
        args.extend(extra);
        args.extend(["--end-of-options", parent, commit, "--"]);
        git(repo, args)
    };
    let status = parse_name_status(&call(&["--name-status", "-z"])?)?;
    let numstat = parse_numstat(&call(&["--numstat", "-z"])?)?;
    let patch = parse_patch(&call(&["-U0"])?)?;
    if status.len() != numstat.len() || status.len() != patch.len() {
        return Err(CriticError::DiffParse {
            what: format!(
                "git diff listed {} files with --name-status, {} with --numstat and {} in the patch",
                status.len(),
                numstat.len(),
                patch.len()
            ),
        });
    }
    let mut out = Vec::with_capacity(status.len());
    for ((st, ns), hunks) in status.into_iter().zip(numstat).zip(patch) {
        if st.path != ns.path || st.old_path != ns.old_path {
            return Err(CriticError::DiffParse {
                what: format!("--name-status and --numstat disagree on file order ({} vs {})", st.path, ns.path),
            });
        }
        out.push(FileChange {
            path: st.path,
            old_path: st.old_path,
            status: st.status,
            added: ns.added,
            removed: ns.removed,
            binary: ns.binary,
            hunks,
        });
    }
    Ok(out)
}

struct StatusEntry {
    status: ChangeStatus,
    path: String,
    old_path: Option<String>,
}

fn fields(out: &[u8]) -> Vec<String> {
    out.split(|b| *b == 0).filter(|f| !f.is_empty()).map(|f| String::from_utf8_lossy(f).into_owned()).collect()
}

fn parse_name_status(out: &[u8]) -> Result<Vec<StatusEntry>, CriticError> {
    let fields = fields(out);
    let mut it = fields.into_iter();
    let mut entries = Vec::new();
    let missing = |what: &str| CriticError::DiffParse { what: format!("git diff --name-status -z: {what}") };
    while let Some(code) = it.next() {
        let status = match code.chars().next() {
            Some('A') => ChangeStatus::Added,
            Some('M') => ChangeStatus::Modified,
            Some('D') => ChangeStatus::Deleted,
            Some('R') => ChangeStatus::Renamed,
            Some('C') => ChangeStatus::Copied,
            Some('T') => ChangeStatus::TypeChanged,
            _ => ChangeStatus::Other,
        };
        let first = it.next().ok_or_else(|| missing(&format!("status {code} without a path")))?;
        if matches!(status, ChangeStatus::Renamed | ChangeStatus::Copied) {
            let new = it.next().ok_or_else(|| missing(&format!("rename of {first} without a new path")))?;
            entries.push(StatusEntry { status, path: new, old_path: Some(first) });
        } else {
            entries.push(StatusEntry { status, path: first, old_path: None });
        }
    }
    Ok(entries)
}

struct NumstatEntry {
    path: String,
    old_path: Option<String>,
    added: u64,
    removed: u64,
    binary: bool,
}

fn parse_numstat(out: &[u8]) -> Result<Vec<NumstatEntry>, CriticError> {
    // Records are `A\tR\tPATH\0`, or for renames `A\tR\t\0OLD\0NEW\0`; binary files have `-` counts.
    let mut entries = Vec::new();
    let mut it = out.split(|b| *b == 0);
    let bad = |what: String| CriticError::DiffParse { what: format!("git diff --numstat -z: {what}") };
    while let Some(rec) = it.next() {
        if rec.is_empty() {
            continue;
        }
        let rec = String::from_utf8_lossy(rec);
        let mut parts = rec.splitn(3, '\t');
        let (a, r, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(r), Some(p)) => (a, r, p),
            _ => return Err(bad(format!("malformed record {rec:?}"))),
        };
        let binary = a == "-" && r == "-";
        let count =
            |s: &str| if binary { Ok(0) } else { s.parse::<u64>().map_err(|_| bad(format!("bad count {s:?}"))) };
        let (added, removed) = (count(a)?, count(r)?);
        let (path, old_path) = if path.is_empty() {
            let old = it.next().map(|p| String::from_utf8_lossy(p).into_owned());
            let new = it.next().map(|p| String::from_utf8_lossy(p).into_owned());
            match (old, new) {
                (Some(old), Some(new)) => (new, Some(old)),
                _ => return Err(bad("a rename record without its two paths".into())),
            }
        } else {
            (path.to_string(), None)
        };
        entries.push(NumstatEntry { path, old_path, added, removed, binary });
    }
    Ok(entries)
}

/// Splits `git diff -U0` output into one hunk list per `diff --git` section, in order.
fn parse_patch(out: &[u8]) -> Result<Vec<Vec<Hunk>>, CriticError> {
    let mut files: Vec<Vec<Hunk>> = Vec::new();
    let mut in_hunks = false;
    let mut last_was_added = false;
    for raw in out.split(|b| *b == b'\n') {
        if raw.starts_with(b"diff --git ") {
            files.push(Vec::new());
            in_hunks = false;
            continue;
        }
        let Some(hunks) = files.last_mut() else { continue };
        if raw.starts_with(b"@@ ") {
            let line = String::from_utf8_lossy(raw);
            hunks.push(parse_hunk_header(&line)?);
            in_hunks = true;
            continue;
        }
        if !in_hunks {
            continue; // extended headers, ---/+++ lines, "Binary files ... differ"
        }
        let hunk = hunks.last_mut().expect("in_hunks is set only after a hunk header");
        match raw.first() {
            Some(b'+') => {
                hunk.added.push(String::from_utf8_lossy(&raw[1..]).into_owned());
                last_was_added = true;
            }
            Some(b'-') => {
                hunk.removed.push(String::from_utf8_lossy(&raw[1..]).into_owned());
                last_was_added = false;
            }
            Some(b'\\') if last_was_added => hunk.added_no_eol = true,
            _ => {}
        }
    }
    Ok(files)
}

fn parse_hunk_header(line: &str) -> Result<Hunk, CriticError> {
    let bad = || CriticError::DiffParse { what: format!("malformed hunk header {line:?}") };
    let body = line.strip_prefix("@@ -").ok_or_else(bad)?;
    let (ranges, _) = body.split_once(" @@").ok_or_else(bad)?;
    let (old, new) = ranges.split_once(" +").ok_or_else(bad)?;
    let range = |r: &str| -> Result<(u32, u32), CriticError> {
        let (start, len) = r.split_once(',').unwrap_or((r, "1"));
        Ok((start.parse().map_err(|_| bad())?, len.parse().map_err(|_| bad())?))
    };
    let (old_start, old_lines) = range(old)?;
    let (new_start, new_lines) = range(new)?;
    Ok(Hunk { old_start, old_lines, new_start, new_lines, removed: Vec::new(), added: Vec::new(), added_no_eol: false })
}

/// The parent's text with only `hunks` applied (each hunk of the parent-to-candidate diff, in file order).
/// Hunks not given are left out, which is how the bite check applies a file's test changes without its
/// code changes.
pub fn apply_hunks(parent_text: &str, hunks: &[&Hunk]) -> String {
    let old: Vec<&str> = parent_text.split_inclusive('\n').collect();
    let mut out = String::with_capacity(parent_text.len());
    let mut cursor = 0usize;
    for h in hunks {
        let start = if h.old_lines == 0 { h.old_start as usize } else { (h.old_start as usize).saturating_sub(1) };
        let start = start.clamp(cursor, old.len());
        old[cursor..start].iter().for_each(|l| out.push_str(l));
        for (i, l) in h.added.iter().enumerate() {
            out.push_str(l);
            if !(h.added_no_eol && i + 1 == h.added.len()) {
                out.push('\n');
            }
        }
        cursor = (start + h.old_lines as usize).min(old.len());
    }
    old[cursor..].iter().for_each(|l| out.push_str(l));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunk_headers() {
        let h = parse_hunk_header("@@ -3,0 +4,2 @@ fn x()").unwrap();
        assert_eq!((h.old_start, h.old_lines, h.new_start, h.new_lines), (3, 0, 4, 2));
        let h = parse_hunk_header("@@ -7 +7 @@").unwrap();
        assert_eq!((h.old_start, h.old_lines, h.new_start, h.new_lines), (7, 1, 7, 1));
        assert!(parse_hunk_header("@@ nonsense").is_err());
    }

    #[test]
    fn numstat_with_rename_and_binary() {
        let out = b"1\t2\ta.txt\x00-\t-\tlogo.png\x000\t0\t\x00old name\x00new\tname\x00";
        let e = parse_numstat(out).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].added, e[0].removed, e[0].binary), (1, 2, false));
        assert!(e[1].binary);
        assert_eq!((e[2].path.as_str(), e[2].old_path.as_deref()), ("new\tname", Some("old name")));
    }

    #[test]
    fn apply_selected_hunks_only() {
        let parent = "a\nb\nc\nd\n";
        let code = Hunk {
            old_start: 1,
            old_lines: 1,
            new_start: 1,
            new_lines: 1,
            removed: vec!["a".into()],
            added: vec!["A".into()],
            added_no_eol: false,
        };
        let test = Hunk {
            old_start: 4,
            old_lines: 0,
            new_start: 4,
            new_lines: 1,
            removed: vec![],
            added: vec!["t".into()],
            added_no_eol: false,
        };
        assert_eq!(apply_hunks(parent, &[&code, &test]), "A\nb\nc\nd\nt\n");
        assert_eq!(apply_hunks(parent, &[&test]), "a\nb\nc\nd\nt\n");
        assert_eq!(apply_hunks(parent, &[&code]), "A\nb\nc\nd\n");
        assert_eq!(apply_hunks("", &[&Hunk { old_start: 0, ..test.clone() }]), "t\n");
    }
}
