//! What kit's benchmark binaries share: their section of `BENCHMARKS.md` and the machine's load.

use std::path::Path;

/// Replace the section starting at `heading` (up to the next `## ` heading) in the Markdown file at
/// `path` with `section`, or append it; other benches' sections stay as they are.
pub fn replace_section(path: &Path, heading: &str, section: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let new = match text.find(heading) {
        Some(start) => {
            let rest = &text[start + heading.len()..];
            let end = rest.find("\n## ").map(|i| start + heading.len() + i + 1).unwrap_or(text.len());
            format!(
                "{}{}{}",
                &text[..start],
                section.trim_end(),
                if end < text.len() { format!("\n\n{}", &text[end..]) } else { "\n".into() }
            )
        }
        None => format!("{}\n\n{}\n", text.trim_end(), section.trim_end()),
    };
    std::fs::write(path, new).expect("writing BENCHMARKS.md");
}

/// The 1-minute load average, as /proc/loadavg says it.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}
