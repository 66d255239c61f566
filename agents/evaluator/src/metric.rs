//! Reading the metric from a benchmark run's stdout.
//!
//! Two ways, chosen by ethos.md's `metric_pattern`:
//! - no pattern: the last non-empty stdout line is JSON, in one of the forms benchmark tools
//!   already print, and every metric in it is returned (the main one and any guard metrics):
//!   - an object of numbers, `{"ms": 41.2, "rss_mb": 12}`;
//!   - one named value, `{"metric": "ms", "value": 41.2}` (other fields such as `unit` ignored);
//!   - a list of named values, `[{"name": "ms", "unit": "ms", "value": 41.2}, ...]` (the form of
//!     github-action-benchmark and similar tools);
//! - a pattern such as `"time: {} ms"`: the number where `{}` stands, from the last stdout line
//!   that matches. Only the main metric can be read this way.

use std::collections::BTreeMap;

/// Why a benchmark run's stdout yielded no metric. Each message names the metric, the line seen
/// and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    #[error(
        "metric `{metric}`: the benchmark printed nothing on stdout; fix: make its last stdout line a JSON object such as {{\"{metric}\": 12.5}}, or set metric_pattern in ethos.md"
    )]
    NoOutput { metric: String },
    #[error(
        "metric `{metric}`: the last stdout line {line:?} is not a JSON object or list of metrics ({problem}); fix: make the benchmark's last stdout line {{\"{metric}\": 12.5}}, {{\"metric\": \"{metric}\", \"value\": 12.5}} or [{{\"name\": \"{metric}\", \"value\": 12.5}}], or set metric_pattern in ethos.md to read plain text"
    )]
    NotJsonObject { metric: String, line: String, problem: String },
    #[error(
        "metric `{metric}`: missing from the last stdout line {line:?} (metrics there: {fields}); fix: print `{metric}` in that JSON line, or correct `metric` in ethos.md"
    )]
    Missing { metric: String, line: String, fields: String },
    #[error(
        "metric `{metric}`: its value {value} in the last stdout line {line:?} is not a number; fix: print it as a JSON number, e.g. {{\"{metric}\": 12.5}}"
    )]
    NotNumber { metric: String, line: String, value: String },
    #[error(
        "metric `{metric}`: no stdout line contains the text of metric_pattern {pattern:?} (last line seen: {line:?}); fix: correct metric_pattern in ethos.md so the text around {{}} matches the benchmark's output"
    )]
    PatternNotFound { metric: String, pattern: String, line: String },
    #[error(
        "metric `{metric}`: the line {line:?} matches the text of metric_pattern {pattern:?} but holds no number where {{}} stands; fix: correct metric_pattern in ethos.md or make the benchmark print a plain number there"
    )]
    PatternNoNumber { metric: String, pattern: String, line: String },
    #[error(
        "metric `{metric}`: metric_pattern {pattern:?} must contain exactly one {{}}; fix: mark where the number is with {{}}, e.g. \"time: {{}} ms\""
    )]
    BadPattern { metric: String, pattern: String },
}

/// The metrics one benchmark run printed. See the module docs for the two forms.
pub fn parse_metrics(stdout: &str, pattern: Option<&str>, metric: &str) -> Result<BTreeMap<String, f64>, MetricError> {
    match pattern {
        None => parse_json_line(stdout, metric),
        Some(p) => {
            let value = parse_pattern(stdout, p, metric)?;
            Ok(BTreeMap::from([(metric.to_string(), value)]))
        }
    }
}

fn last_line(stdout: &str) -> Option<&str> {
    stdout.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// Long lines are cut in messages: the point is to show what was seen, not to echo megabytes.
fn clip(line: &str) -> String {
    const MAX: usize = 200;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

fn parse_json_line(stdout: &str, metric: &str) -> Result<BTreeMap<String, f64>, MetricError> {
    let line = last_line(stdout).ok_or_else(|| MetricError::NoOutput { metric: metric.into() })?;
    let not_object = |problem: String| MetricError::NotJsonObject { metric: metric.into(), line: clip(line), problem };
    use serde_json::Value;
    let value: Value = serde_json::from_str(line).map_err(|e| not_object(e.to_string()))?;
    let named = |o: &serde_json::Map<String, Value>, key: &str| -> Option<(String, Value)> {
        Some((o.get(key)?.as_str()?.to_string(), o.get("value")?.clone()))
    };
    // Every form becomes name -> JSON value.
    let fields: serde_json::Map<String, Value> = match value {
        Value::Object(o) => match named(&o, "metric") {
            Some((name, v)) => [(name, v)].into_iter().collect(),
            None => o,
        },
        Value::Array(items) => {
            let mut out = serde_json::Map::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_object().and_then(|o| named(o, "name")) {
                    Some((name, v)) => {
                        out.insert(name, v);
                    }
                    None => {
                        return Err(not_object(format!(
                            "item {i} of the list is not an object with a string `name` and a `value`"
                        )));
                    }
                }
            }
            out
        }
        other => {
            let kind = match other {
                Value::String(_) => "a string",
                Value::Number(_) => "a bare number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            };
            return Err(not_object(format!("it is {kind}")));
        }
    };
    let numbers: BTreeMap<String, f64> =
        fields.iter().filter_map(|(k, v)| v.as_f64().filter(|x| x.is_finite()).map(|x| (k.clone(), x))).collect();
    match fields.get(metric) {
        None => Err(MetricError::Missing {
            metric: metric.into(),
            line: clip(line),
            fields: if numbers.is_empty() {
                "none".into()
            } else {
                numbers.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            },
        }),
        Some(v) if !numbers.contains_key(metric) => {
            Err(MetricError::NotNumber { metric: metric.into(), line: clip(line), value: v.to_string() })
        }
        Some(_) => Ok(numbers),
    }
}

fn parse_pattern(stdout: &str, pattern: &str, metric: &str) -> Result<f64, MetricError> {
    let mut parts = pattern.split("{}");
    let (Some(prefix), Some(suffix), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(MetricError::BadPattern { metric: metric.into(), pattern: pattern.into() });
    };
    // Whitespace next to `{}` is optional in the output: "time: {} ms" reads "time:41.2ms" too.
    let (prefix, suffix) = (prefix.trim_start().trim_end(), suffix.trim_start().trim_end());
    let mut near_miss: Option<&str> = None;
    for line in stdout.lines().rev() {
        let mut starts: Vec<usize> = line.match_indices(prefix).map(|(i, _)| i + prefix.len()).collect();
        if prefix.is_empty() {
            starts = line.char_indices().map(|(i, _)| i).collect();
        }
        if starts.is_empty() {
            continue;
        }
        for start in starts {
            let rest = &line[start..];
            let body = rest.trim_start();
            if let Some((value, len)) = leading_number(body)
                && body[len..].trim_start().starts_with(suffix)
            {
                return Ok(value);
            }
        }
        if !prefix.is_empty() {
            near_miss.get_or_insert(line);
        }
    }
    match near_miss {
        Some(line) => Err(MetricError::PatternNoNumber {
            metric: metric.into(),
            pattern: pattern.into(),
            line: clip(line.trim()),
        }),
        None => Err(MetricError::PatternNotFound {
            metric: metric.into(),
            pattern: pattern.into(),
            line: clip(last_line(stdout).unwrap_or("")),
        }),
    }
}

/// A decimal number at the start of `s` (sign, digits, fraction, exponent): its value and length.
fn leading_number(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_end = digits(i);
    let mut end = int_end;
    let mut mantissa_digits = int_end - i;
    if end < b.len() && b[end] == b'.' {
        let frac_end = digits(end + 1);
        mantissa_digits += frac_end - end - 1;
        if frac_end > end + 1 || int_end > i {
            end = frac_end;
        }
    }
    if mantissa_digits == 0 {
        return None;
    }
    if end < b.len() && (b[end] == b'e' || b[end] == b'E') {
        let mut j = end + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_end = digits(j);
        if exp_end > j {
            end = exp_end;
        }
    }
    s[..end].parse::<f64>().ok().filter(|x| x.is_finite()).map(|x| (x, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(stdout: &str, pattern: Option<&str>) -> Result<f64, MetricError> {
        parse_metrics(stdout, pattern, "time_ms").map(|m| m["time_ms"])
    }

    #[test]
    fn json_last_line_returns_every_numeric_field() {
        let out = "warming up\n{\"time_ms\": 0}\nrunning\n{\"time_ms\": 41.2, \"rss_mb\": 12, \"label\": \"x\", \"ok\": true}\n\n";
        let m = parse_metrics(out, None, "time_ms").unwrap();
        assert_eq!(m, BTreeMap::from([("rss_mb".to_string(), 12.0), ("time_ms".to_string(), 41.2)]));
    }

    #[test]
    fn the_forms_benchmark_tools_print() {
        // {"metric": name, "value": v}: the named metric; other fields (unit) are not metrics.
        let m = parse_metrics("x\n{\"metric\": \"time_ms\", \"value\": 41.2, \"unit\": \"ms\"}\n", None, "time_ms")
            .unwrap();
        assert_eq!(m, BTreeMap::from([("time_ms".to_string(), 41.2)]));
        let e = one("{\"metric\": \"time\", \"value\": 41.2}\n", None).unwrap_err();
        assert!(matches!(&e, MetricError::Missing { fields, .. } if fields == "time"), "{e:?}");
        // [{"name", "unit", "value"}, ...]: every named value, the guards too.
        let out = "[{\"name\": \"time_ms\", \"unit\": \"ms\", \"value\": 41.2}, {\"name\": \"rss_mb\", \"unit\": \"MiB\", \"value\": 12}]\n";
        let m = parse_metrics(out, None, "time_ms").unwrap();
        assert_eq!(m, BTreeMap::from([("rss_mb".to_string(), 12.0), ("time_ms".to_string(), 41.2)]));
        let e = one("[{\"name\": \"time_ms\", \"value\": \"fast\"}]\n", None).unwrap_err();
        assert!(matches!(&e, MetricError::NotNumber { value, .. } if value == "\"fast\""), "{e:?}");
        let e = one("[{\"name\": \"time_ms\"}]\n", None).unwrap_err().to_string();
        assert!(e.contains("item 0 of the list") && e.contains("[{\"name\": \"time_ms\", \"value\": 12.5}]"), "{e}");
    }

    #[test]
    fn json_errors_name_metric_line_and_fix() {
        let e = one("  \n\n", None).unwrap_err().to_string();
        assert!(e.starts_with("metric `time_ms`: the benchmark printed nothing on stdout; fix:"), "{e}");

        let e = one("{\"time_ms\": 1}\ndone in 41.2 ms\n", None).unwrap_err();
        assert!(matches!(&e, MetricError::NotJsonObject { line, .. } if line == "done in 41.2 ms"), "{e:?}");
        assert!(e.to_string().contains("fix: make the benchmark's last stdout line {\"time_ms\": 12.5}"), "{e}");

        let e = one("[1, 2]\n", None).unwrap_err().to_string();
        assert!(e.contains("(item 0 of the list is not an object with a string `name` and a `value`)"), "{e}");
        let e = one("\"fast\"\n", None).unwrap_err().to_string();
        assert!(e.contains("(it is a string)"), "{e}");

        let e = one("{\"time\": 41.2, \"rss_mb\": 3}\n", None).unwrap_err().to_string();
        assert_eq!(
            e,
            "metric `time_ms`: missing from the last stdout line \"{\\\"time\\\": 41.2, \\\"rss_mb\\\": 3}\" \
             (metrics there: rss_mb, time); fix: print `time_ms` in that JSON line, or correct `metric` in ethos.md"
        );

        let e = one("{\"time_ms\": \"41.2\"}\n", None).unwrap_err();
        assert!(matches!(&e, MetricError::NotNumber { value, .. } if value == "\"41.2\""), "{e:?}");
    }

    #[test]
    fn pattern_reads_the_number_from_the_last_matching_line() {
        let out = "time: 50 ms\nrss 12\ntime: 41.25 ms (best of 3)\nbye\n";
        assert_eq!(one(out, Some("time: {} ms")).unwrap(), 41.25);
        // Whitespace next to {} is optional; signs and exponents are numbers.
        assert_eq!(one("time:-1.5e2ms\n", Some("time: {} ms")).unwrap(), -150.0);
        assert_eq!(one("score .5\n", Some("score {}")).unwrap(), 0.5);
        // An empty prefix finds the number before the suffix anywhere in the line.
        assert_eq!(one("took 7 ms\n", Some("{} ms")).unwrap(), 7.0);
        // The suffix must follow the number.
        assert_eq!(one("time: 3 s\ntime: 4 ms\ntime: 5 s\n", Some("time: {} ms")).unwrap(), 4.0);
        // With a pattern only the named metric comes back.
        let m = parse_metrics("t=3\n", Some("t={}"), "t").unwrap();
        assert_eq!(m, BTreeMap::from([("t".to_string(), 3.0)]));
    }

    #[test]
    fn pattern_errors_name_metric_line_and_fix() {
        let e = one("elapsed 41 ms\nbye\n", Some("time: {} ms")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "metric `time_ms`: no stdout line contains the text of metric_pattern \"time: {} ms\" (last line seen: \"bye\"); \
             fix: correct metric_pattern in ethos.md so the text around {} matches the benchmark's output"
        );
        let e = one("time: n/a ms\nbye\n", Some("time: {} ms")).unwrap_err();
        assert!(matches!(&e, MetricError::PatternNoNumber { line, .. } if line == "time: n/a ms"), "{e:?}");
        let e = one("time: 3\n", Some("time: {} {}")).unwrap_err().to_string();
        assert!(e.contains("must contain exactly one {}; fix: mark where the number is with {}"), "{e}");
        let e = one("time: 3\n", Some("time")).unwrap_err();
        assert!(matches!(e, MetricError::BadPattern { .. }), "{e:?}");
    }

    #[test]
    fn long_lines_are_clipped_in_errors() {
        let line = "x".repeat(1000);
        let e = one(&line, None).unwrap_err();
        let MetricError::NotJsonObject { line, .. } = e else { panic!("{e:?}") };
        assert_eq!(line.len(), 203);
    }

    #[test]
    fn leading_numbers() {
        assert_eq!(leading_number("12.5ms"), Some((12.5, 4)));
        assert_eq!(leading_number("-3e-2 x"), Some((-0.03, 5)));
        assert_eq!(leading_number("7e"), Some((7.0, 1)));
        assert_eq!(leading_number("7."), Some((7.0, 2)));
        assert_eq!(leading_number("."), None);
        assert_eq!(leading_number("-"), None);
        assert_eq!(leading_number("ms"), None);
    }
}
