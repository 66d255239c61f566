//! Plain-text tables and state-change lines for the terminal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Send the supervisor's human output to stderr (so stdout carries only JSON, for `--json`).
pub fn human_output_to_stderr(on: bool) {
    TO_STDERR.store(on, Ordering::Relaxed);
}

/// Print a line of human output (stdout, or stderr under `--json`).
pub fn say(text: &str) {
    use std::io::Write;
    if TO_STDERR.load(Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// Print `text` to stdout as it is (a command's result, e.g. JSON); a closed pipe ends the
/// process quietly instead of a panic.
pub fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Left-aligned columns separated by two spaces; `-` for empty cells.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell(c).chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.iter().map(|c| cell(c)).collect());
    }
    out
}

/// "0.2s", "1.6s", "5s".
pub fn seconds(d: Duration) -> String {
    let s = format!("{:.1}", d.as_secs_f64());
    format!("{}s", s.strip_suffix(".0").unwrap_or(&s))
}

pub fn list(names: &[String]) -> String {
    if names.is_empty() { "-".to_string() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_table() {
        let t = table(&["NAME", "PID"], &[vec!["critic".into(), "12".into()], vec!["x".into(), String::new()]]);
        assert_eq!(t, "NAME    PID\ncritic  12\nx       -\n");
        assert_eq!(seconds(Duration::from_millis(200)), "0.2s");
        assert_eq!(seconds(Duration::from_secs(5)), "5s");
    }
}
