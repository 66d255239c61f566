//! What every bench binary shares (the `ratchet-bench` binaries, and kit's benches through a
//! `#[path]` module, with `ratchet_kit` named `kit`): its section of `BENCHMARKS.md` and the
//! machine's load.

use std::path::Path;

use anyhow::Context;

/// Replace the section starting at the line `heading` (up to the next `## ` heading) in the
/// Markdown file at `path` with `section`, or append it; other benches' sections stay as they
/// are. Write-temp-then-rename.
pub fn write_section(path: &Path, heading: &str, section: &str) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = match old.match_indices(heading).find(|(i, _)| *i == 0 || old[..*i].ends_with('\n')) {
        Some((start, _)) => {
            let rest = &old[start + heading.len()..];
            let end = rest.find("\n## ").map_or(old.len(), |i| start + heading.len() + i + 1);
            let tail = &old[end..];
            let sep = if tail.is_empty() { "" } else { "\n" };
            format!("{}{}\n{sep}{tail}", &old[..start], section.trim_end())
        }
        None => format!("{}\n\n{}\n", old.trim_end(), section.trim_end()),
    };
    kit::files::write_atomic(path, new.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// The load averages over 1, 5 and 15 minutes, as /proc/loadavg says them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
