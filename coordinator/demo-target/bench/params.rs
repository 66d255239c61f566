//! A hand-written reader for `params.toml`: one `key = value` per line, `#` comments, values are
//! integers, bare words or "quoted strings". No dependencies, on purpose.

use sortbench::sort::{Algorithm, Config, Gaps};

pub struct Params {
    pub config: Config,
    /// A name for the run. It is printed to stderr and changes nothing else.
    pub label: Option<String>,
}

pub fn load(path: &str) -> Result<Params, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading {path}: {e}; run from the crate root"))?;
    parse(path, &text)
}

pub fn parse(path: &str, text: &str) -> Result<Params, String> {
    let mut params = Params {
        config: Config::default(),
        label: None,
    };
    for (i, raw) in text.lines().enumerate() {
        let at = |problem: String| format!("{path}:{}: {problem}", i + 1);
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(at(format!("expected `key = value`, found {line:?}")));
        };
        let key = key.trim();
        let value = unquote(value.trim());
        match key {
            "algorithm" => {
                params.config.algorithm = Algorithm::from_name(value).ok_or_else(|| {
                    at(format!(
                        "unknown algorithm {value:?}; use one of {}",
                        Algorithm::NAMES.join(", ")
                    ))
                })?
            }
            "cutoff" => {
                params.config.cutoff = value
                    .parse()
                    .map_err(|_| at(format!("cutoff {value:?} is not a non-negative integer")))?
            }
            "gap_sequence" => {
                params.config.gaps = Gaps::from_name(value).ok_or_else(|| {
                    at(format!(
                        "unknown gap_sequence {value:?}; use one of {}",
                        Gaps::NAMES.join(", ")
                    ))
                })?
            }
            "label" => params.label = Some(value.to_string()),
            _ => {
                return Err(at(format!(
                    "unknown key {key:?}; known: algorithm, cutoff, gap_sequence, label"
                )))
            }
        }
    }
    Ok(params)
}

/// Drop a `#` comment that is not inside a quoted string.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}
