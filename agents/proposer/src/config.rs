//! Reading and editing the swept config file.
//!
//! Parameters are named by dotted paths: `cutoff` is a top-level key, `sort.cutoff` the key
//! `cutoff` of the table (object) `sort`.
//!
//! - TOML: only the `key = value` line of the parameter is rewritten; indentation, spacing and a
//!   trailing comment are kept, every other line is untouched. A missing key is inserted after
//!   the last key of its table (a missing table is appended). The result is parsed again and must
//!   equal the original with just that value changed, or the edit is refused.
//! - JSON: parsed and written back pretty-printed (two-space indent; keys sorted, as serde_json
//!   orders them without its `preserve_order` feature; the original's trailing newline kept).

use serde_json::Value as Json;

use crate::ProposalError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    Toml,
    Json,
}

impl ConfigFormat {
    /// JSON when the file name ends in `.json`, TOML otherwise.
    pub fn of(file: &str) -> ConfigFormat {
        if file.to_ascii_lowercase().ends_with(".json") { ConfigFormat::Json } else { ConfigFormat::Toml }
    }
}

fn config_error(file: &str, problem: impl Into<String>, fix: impl Into<String>) -> ProposalError {
    ProposalError::Config { file: file.into(), problem: problem.into(), fix: fix.into() }
}

/// A TOML value as JSON (datetimes become their TOML text).
pub(crate) fn toml_to_json(v: &toml::Value) -> Json {
    match v {
        toml::Value::String(s) => Json::String(s.clone()),
        toml::Value::Integer(i) => Json::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(a) => Json::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Json::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

/// The parsed config, as JSON whatever its format.
pub(crate) fn parse(file: &str, text: &str) -> Result<Json, ProposalError> {
    match ConfigFormat::of(file) {
        ConfigFormat::Json => serde_json::from_str(text)
            .map_err(|e| config_error(file, format!("not valid JSON: {e}"), "make the baseline's config valid JSON")),
        ConfigFormat::Toml => {
            toml::from_str::<toml::Table>(text).map(|t| toml_to_json(&toml::Value::Table(t))).map_err(|e| {
                config_error(file, format!("not valid TOML: {}", e.message()), "make the baseline's config valid TOML")
            })
        }
    }
}

/// The value at a dotted path, if any.
pub(crate) fn get<'a>(doc: &'a Json, param: &str) -> Option<&'a Json> {
    param.split('.').try_fold(doc, |v, k| v.as_object()?.get(k))
}

/// `text` (the config `file`) with `param` set to `value`.
pub fn set_value(file: &str, text: &str, param: &str, value: &toml::Value) -> Result<String, ProposalError> {
    let path: Vec<&str> = param.split('.').collect();
    if path.iter().any(|k| k.is_empty()) {
        return Err(config_error(
            file,
            format!("parameter {param:?} has an empty key"),
            "name parameters as key or table.key in [proposer.space]",
        ));
    }
    match ConfigFormat::of(file) {
        ConfigFormat::Json => set_json(file, text, &path, value),
        ConfigFormat::Toml => set_toml(file, text, &path, value),
    }
}

fn set_json(file: &str, text: &str, path: &[&str], value: &toml::Value) -> Result<String, ProposalError> {
    let mut doc = parse(file, text)?;
    let (last, parents) = path.split_last().expect("a parameter has at least one key");
    let mut cur = &mut doc;
    for (i, key) in parents.iter().enumerate() {
        let obj = cur.as_object_mut().ok_or_else(|| {
            config_error(file, format!("{} is not an object", path[..i].join(".")), "sweep a key of an object")
        })?;
        cur = obj.entry(key.to_string()).or_insert_with(|| Json::Object(Default::default()));
    }
    let obj = cur.as_object_mut().ok_or_else(|| {
        config_error(file, format!("{} is not an object", parents.join(".")), "sweep a key of an object")
    })?;
    obj.insert(last.to_string(), toml_to_json(value));
    let mut out = serde_json::to_string_pretty(&doc).expect("a JSON value serializes");
    if text.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// Split a dotted TOML key (`a."b.c".d`) into its parts; `None` when it is not a plain key.
fn key_parts(key: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut rest = key.trim();
    loop {
        let (part, after) = if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"')?;
            (r[..end].to_string(), &r[end + 1..])
        } else if let Some(r) = rest.strip_prefix('\'') {
            let end = r.find('\'')?;
            (r[..end].to_string(), &r[end + 1..])
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let bare = rest[..end].trim();
            if bare.is_empty() || !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return None;
            }
            (bare.to_string(), &rest[end..])
        };
        parts.push(part);
        let after = after.trim_start();
        if after.is_empty() {
            return Some(parts);
        }
        rest = after.strip_prefix('.')?.trim_start();
    }
}

/// Byte offset of the `=` of a `key = value` line (outside quotes).
fn equals_at(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '=') => return Some(i),
            (None, '#') => return None,
            _ => {}
        }
    }
    None
}

enum Line {
    /// `[a.b]`: the path of the table that follows; `None` for `[[array]]` tables (not sweepable).
    Header(Option<Vec<String>>),
    /// `key = value`: byte offset of `=` and the key's path.
    Pair(usize, Vec<String>),
    Other,
}

fn classify(line: &str) -> Line {
    let t = line.trim();
    if t.starts_with("[[") {
        return Line::Header(None);
    }
    if let Some(inner) = t.strip_prefix('[') {
        let inner = inner.split('#').next().unwrap_or("").trim_end();
        return Line::Header(inner.strip_suffix(']').and_then(key_parts));
    }
    if t.is_empty() || t.starts_with('#') {
        return Line::Other;
    }
    match equals_at(line) {
        Some(eq) => key_parts(&line[..eq]).map_or(Line::Other, |k| Line::Pair(eq, k)),
        None => Line::Other,
    }
}

fn render_key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        k.to_string()
    } else {
        format!("{:?}", k)
    }
}

/// The end of the value in `rest` (the text after `=`): the first `#` (or the end) before which
/// the text parses as one TOML value. `None` when the value spans several lines.
fn value_end(rest: &str) -> Option<usize> {
    let candidates = rest.char_indices().filter(|(_, c)| *c == '#').map(|(i, _)| i).chain([rest.len()]);
    candidates.into_iter().find(|&end| toml::from_str::<toml::Table>(&format!("v = {}", &rest[..end])).is_ok())
}

fn set_toml(file: &str, text: &str, path: &[&str], value: &toml::Value) -> Result<String, ProposalError> {
    let original: toml::Table = toml::from_str(text).map_err(|e| {
        config_error(file, format!("not valid TOML: {}", e.message()), "make the baseline's config valid TOML")
    })?;
    let param = path.join(".");
    let rendered = value.to_string();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();

    let mut table: Option<Vec<String>> = Some(Vec::new());
    // Index of the line after which a missing key of the wanted table goes.
    let mut insert_after: Option<usize> = None;
    let (last, parents) = path.split_last().expect("a parameter has at least one key");
    let mut done = false;
    for (i, line) in lines.iter().enumerate() {
        match classify(line) {
            Line::Header(t) => {
                if t.as_deref().is_some_and(|t| t == parents) {
                    insert_after = Some(i);
                }
                table = t;
            }
            Line::Pair(eq, key) => {
                let Some(t) = &table else { continue };
                if t.as_slice() == parents {
                    insert_after = Some(i);
                }
                let full: Vec<&str> = t.iter().chain(&key).map(String::as_str).collect();
                if full != path {
                    continue;
                }
                let rest = &line[eq + 1..];
                let body = rest.trim_end_matches(['\n', '\r']);
                let newline = &rest[body.len()..];
                let Some(end) = value_end(body) else {
                    return Err(config_error(
                        file,
                        format!("line {}: the value of {param} spans several lines", i + 1),
                        format!("write {param} on one line, or leave it out of [proposer.space]"),
                    ));
                };
                let lead = &body[..body.len() - body.trim_start().len()];
                let value_text = &body[..end];
                let gap = &value_text[value_text.trim_end().len()..];
                out[i] = format!("{}={lead}{rendered}{gap}{}{newline}", &line[..eq], &body[end..]);
                done = true;
                break;
            }
            Line::Other => {}
        }
    }
    if !done {
        let key_line = format!("{} = {rendered}\n", render_key(last));
        match insert_after {
            Some(i) => {
                if !out[i].ends_with('\n') {
                    out[i].push('\n');
                }
                out.insert(i + 1, key_line);
            }
            None if parents.is_empty() => out.insert(0, key_line),
            None => {
                if let Some(l) = out.last_mut().filter(|l| !l.ends_with('\n')) {
                    l.push('\n');
                }
                let header: Vec<String> = parents.iter().map(|k| render_key(k)).collect();
                let sep = if out.is_empty() { "" } else { "\n" };
                out.push(format!("{sep}[{}]\n{key_line}", header.join(".")));
            }
        }
    }
    let edited = out.concat();

    // The edit must change exactly this one value.
    let mut expected = original;
    let mut cur = &mut expected;
    for key in parents {
        let entry = cur.entry(key.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(config_error(file, format!("{param}: {key} is not a table"), "sweep a key of a table"));
            }
        };
    }
    cur.insert(last.to_string(), value.clone());
    match toml::from_str::<toml::Table>(&edited) {
        Ok(got) if got == expected => Ok(edited),
        _ => Err(config_error(
            file,
            format!(
                "could not set {param} by rewriting one line (it is defined in a form this editor does not handle, such as an inline table or an array of tables)"
            ),
            format!("define {param} as a plain `key = value` line, or use a JSON config"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> toml::Value {
        toml::from_str::<toml::Table>(&format!("v = {s}")).unwrap().remove("v").unwrap()
    }

    #[test]
    fn toml_rewrites_only_the_line_and_keeps_comments() {
        let text =
            "# top\nalgorithm = \"shell\"  # which sort\ncutoff=16\n\n[gc]\n  cutoff = 4 # nested\nname = \"a#b\"\n";
        let out = set_value("params.toml", text, "algorithm", &v("\"merge\"")).unwrap();
        assert_eq!(out, text.replace("\"shell\"  # which", "\"merge\"  # which"));
        let out = set_value("params.toml", text, "cutoff", &v("32")).unwrap();
        assert_eq!(out, text.replace("cutoff=16", "cutoff=32"));
        let out = set_value("params.toml", text, "gc.cutoff", &v("8")).unwrap();
        assert_eq!(out, text.replace("cutoff = 4 # nested", "cutoff = 8 # nested"));
        let out = set_value("params.toml", text, "gc.name", &v("\"x\"")).unwrap();
        assert_eq!(out, text.replace("\"a#b\"", "\"x\""));
    }

    #[test]
    fn toml_inserts_missing_keys_and_tables() {
        let text = "a = 1\n\n[t]\nb = 2\n";
        let out = set_value("c.toml", text, "z", &v("true")).unwrap();
        assert_eq!(out, "a = 1\nz = true\n\n[t]\nb = 2\n");
        let out = set_value("c.toml", text, "t.c", &v("[1, 2]")).unwrap();
        assert_eq!(out, "a = 1\n\n[t]\nb = 2\nc = [1, 2]\n");
        let out = set_value("c.toml", "a = 1", "u.d", &v("0.5")).unwrap();
        assert_eq!(out, "a = 1\n\n[u]\nd = 0.5\n");
        let out = set_value("c.toml", "[t]\nb = 2\n", "top", &v("3")).unwrap();
        assert_eq!(out, "top = 3\n[t]\nb = 2\n");
    }

    #[test]
    fn toml_refuses_what_it_cannot_edit_in_place() {
        let e = set_value("c.toml", "a = [\n 1,\n]\n", "a", &v("2")).unwrap_err().to_string();
        assert!(e.contains("spans several lines") && e.starts_with("c.toml: line 1"), "{e}");
        let e = set_value("c.toml", "t = { a = 1 }\n", "t.a", &v("2")).unwrap_err().to_string();
        assert!(e.contains("could not set t.a"), "{e}");
        let e = set_value("c.toml", "a = \n", "a", &v("2")).unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn json_round_trips_pretty() {
        let text = "{\"a\": \"x\", \"b\": {\"c\": 1}}\n";
        let out = set_value("conf.json", text, "b.c", &v("2")).unwrap();
        assert_eq!(out, "{\n  \"a\": \"x\",\n  \"b\": {\n    \"c\": 2\n  }\n}\n");
        let out = set_value("conf.JSON", "{}", "n.m", &v("\"s\"")).unwrap();
        assert_eq!(out, "{\n  \"n\": {\n    \"m\": \"s\"\n  }\n}");
        let e = set_value("conf.json", "{\"a\": 1}", "a.b", &v("2")).unwrap_err().to_string();
        assert!(e.contains("a is not an object"), "{e}");
    }

    #[test]
    fn dotted_keys_parse() {
        assert_eq!(key_parts("a . \"b.c\" .d"), Some(vec!["a".into(), "b.c".into(), "d".into()]));
        assert_eq!(key_parts("a b"), None);
        assert_eq!(get(&serde_json::json!({"a": {"b": 3}}), "a.b"), Some(&serde_json::json!(3)));
    }
}
