//! The `sweep` strategy: one-parameter changes of a config file, from the current baseline.
//!
//! A candidate is one value of one parameter of the search space (`[proposer.space]` in
//! cadence.md). Its approach key is [`sweep_key`] (`cutoff=32`). A candidate is skipped when its
//! value is already the baseline's, when its key is in the history (tried once is tried: the
//! sweep never proposes the same approach twice, whatever became of it) or in the banned list.
//!
//! ## Order
//! Parameters are ranked by what the history says about changing them (a history entry belongs
//! to a parameter when its key is one of that parameter's candidate keys):
//! 1. parameters a change of which helped (PROMOTE: promoted or passed over), the larger the best
//!    delta the earlier;
//! 2. parameters never tried;
//! 3. parameters tried without a clear result (some HOLD), the larger the best delta the earlier;
//! 4. parameters whose every change hurt (REJECT or failed);
//!
//! ties by name. Values of one parameter are ranked by their position in the space's list, which
//! is taken as the parameter's scale: nearest first to a *good* value (the baseline's value and
//! any value whose change helped); at equal distance, values not next to one that hurt first,
//! then values after the good one (later in the list) before values before it, then list order.
//! With no good value known, list order.
//!
//! The proposals then take the parameters round-robin in rank order: the best value of each
//! parameter, then the second best of each, and so on, so that one cycle's candidates explore
//! different parameters. Fewer than `n` (possibly none) come back when the space is exhausted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use protocol::rails::Declaration;
use serde_json::{Value as Json, json};

use crate::config::{self, toml_to_json};
use crate::{FileEdit, Proposal, ProposalError, Tried, render_value, slug};

/// The approach key of setting `param` to `value`: `param=value`, as
/// [`Proposal::approach_key`](crate::Proposal::approach_key) renders it.
pub fn sweep_key(param: &str, value: &toml::Value) -> String {
    format!("{param}={}", render_value(&toml_to_json(value)))
}

#[derive(Default)]
struct ParamHistory {
    entries: usize,
    helped: bool,
    held: bool,
    best_delta: Option<f64>,
    /// Indices (in the space's list) of values whose change helped / hurt.
    good: BTreeSet<usize>,
    bad: BTreeSet<usize>,
}

impl ParamHistory {
    fn rank(&self) -> u8 {
        if self.helped {
            0
        } else if self.entries == 0 {
            1
        } else if self.held {
            2
        } else {
            3
        }
    }
}

/// One parameter's candidate values, best first: (index in the space's list, approach key).
struct Ranked<'a> {
    param: &'a str,
    values: Vec<(usize, String)>,
    history: &'a ParamHistory,
}

/// Up to `n` one-parameter changes of `file` (whose baseline text is `baseline_config_text`),
/// best first; see the module documentation for the order.
pub fn propose_sweep(
    baseline_config_text: &str,
    file: &str,
    space: &BTreeMap<String, Vec<toml::Value>>,
    history: &[Tried],
    banned: &[String],
    n: usize,
) -> Result<Vec<Proposal>, ProposalError> {
    let doc = config::parse(file, baseline_config_text)?;
    let tried: BTreeSet<&str> = history.iter().map(|t| t.key.as_str()).collect();
    let banned: BTreeSet<&str> = banned.iter().map(String::as_str).collect();

    let mut owner: HashMap<String, (&str, usize)> = HashMap::new();
    for (param, values) in space {
        for (i, v) in values.iter().enumerate() {
            owner.entry(sweep_key(param, v)).or_insert((param.as_str(), i));
        }
    }
    let mut past: BTreeMap<&str, ParamHistory> = space.keys().map(|p| (p.as_str(), ParamHistory::default())).collect();
    for t in history {
        let Some(&(param, i)) = owner.get(&t.key) else { continue };
        let h = past.get_mut(param).expect("every owner is a space parameter");
        h.entries += 1;
        if let Some(d) = t.delta.filter(|d| d.is_finite()) {
            h.best_delta = Some(h.best_delta.map_or(d, |b| b.max(d)));
        }
        if t.outcome.helped() {
            h.helped = true;
            h.good.insert(i);
        } else if t.outcome.hurt() {
            h.bad.insert(i);
        } else {
            h.held = true;
        }
    }

    // Each parameter's candidates, best first.
    let mut ranked: Vec<Ranked> = Vec::new();
    for (param, values) in space {
        let h = &past[param.as_str()];
        let current = config::get(&doc, param);
        let mut good = h.good.clone();
        if let Some(cur) = current {
            good.extend(values.iter().position(|v| toml_to_json(v) == *cur));
        }
        let mut seen = BTreeSet::new();
        // ((distance to a good value, next to a bad one, before the good one, index), key)
        let mut candidates: Vec<((usize, bool, bool, usize), String)> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let key = sweep_key(param, v);
            if current == Some(&toml_to_json(v))
                || tried.contains(key.as_str())
                || banned.contains(key.as_str())
                || !seen.insert(key.clone())
            {
                continue;
            }
            let dist = good.iter().map(|g| g.abs_diff(i)).min().unwrap_or(0);
            let near_bad = h.bad.iter().any(|b| b.abs_diff(i) == 1);
            let before_good = !good.is_empty() && !good.iter().any(|g| g + dist == i);
            candidates.push(((dist, near_bad, before_good, i), key));
        }
        candidates.sort_by_key(|c| c.0);
        let values = candidates.into_iter().map(|(rank, key)| (rank.3, key)).collect();
        ranked.push(Ranked { param: param.as_str(), values, history: h });
    }
    ranked.sort_by(|a, b| {
        let delta = |r: &Ranked| r.history.best_delta.unwrap_or(0.0);
        (a.history.rank().cmp(&b.history.rank())).then(delta(b).total_cmp(&delta(a))).then(a.param.cmp(b.param))
    });

    let mut picks: Vec<(&str, usize, String)> = Vec::new();
    let rounds = ranked.iter().map(|r| r.values.len()).max().unwrap_or(0);
    'outer: for round in 0..rounds {
        for r in &ranked {
            if picks.len() >= n {
                break 'outer;
            }
            if let Some((i, key)) = r.values.get(round) {
                picks.push((r.param, *i, key.clone()));
            }
        }
    }

    picks
        .into_iter()
        .map(|(param, i, key)| {
            let value = &space[param][i];
            let content = config::set_value(file, baseline_config_text, param, value)?;
            let from = config::get(&doc, param).map_or("unset".to_string(), render_value);
            let to = toml_to_json(value);
            let summary = format!("set {param} from {from} to {} in {file}", render_value(&to));
            // The sweep changes its config file and nothing else, and says so.
            let declaration = Declaration {
                files: vec![file.to_string()],
                rationale: format!("sweep: {summary}, one parameter at a time"),
                tests: vec![],
                effect: None,
            };
            Ok(Proposal {
                id: format!("sweep-{}-{}", slug(&key, 40), &protocol::governance::hash(&key)[..8]),
                strategy: "sweep".into(),
                summary,
                files: vec![file.to_string()],
                params: nested(param, to),
                patch: None,
                edits: vec![FileEdit { path: file.to_string(), content }],
                model: None,
                declaration: Some(declaration),
            })
        })
        .collect()
}

/// `{"param": value}`; the parameter keeps its dotted name as one key, so that the approach key
/// of the proposal is the same as [`sweep_key`].
fn nested(param: &str, value: Json) -> Json {
    json!({ param: value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TriedOutcome;

    fn space(spec: &str) -> BTreeMap<String, Vec<toml::Value>> {
        toml::from_str(spec).unwrap()
    }

    fn keys(ps: &[Proposal]) -> Vec<String> {
        ps.iter().map(Proposal::approach_key).collect()
    }

    fn tried(key: &str, outcome: TriedOutcome, delta: f64) -> Tried {
        Tried { key: key.into(), outcome, delta: Some(delta) }
    }

    const BASE: &str = "algorithm = \"shell\"\ncutoff = 16\nlabel = \"x\"\n";

    fn demo_space() -> BTreeMap<String, Vec<toml::Value>> {
        space(
            "algorithm = [\"insertion-hybrid\", \"merge\", \"shell\", \"heap\", \"std\"]\n\
             cutoff = [4, 8, 16, 32, 64, 256, 2048]\nlabel = [\"x\", \"y\"]\n",
        )
    }

    #[test]
    fn first_cycle_explores_each_parameter_next_to_the_baseline() {
        let ps = propose_sweep(BASE, "params.toml", &demo_space(), &[], &[], 3).unwrap();
        // Untried parameters by name; values next to the baseline's, later in the list first.
        assert_eq!(keys(&ps), ["algorithm=heap", "cutoff=32", "label=y"]);
        let p = &ps[0];
        assert_eq!(p.edits, [FileEdit { path: "params.toml".into(), content: BASE.replace("shell", "heap") }]);
        assert_eq!((p.files.as_slice(), p.strategy.as_str()), (&["params.toml".to_string()][..], "sweep"));
        assert_eq!(p.summary, "set algorithm from shell to heap in params.toml");
        let d = p.declaration.as_ref().expect("a sweep declares its file");
        assert_eq!(d.files, ["params.toml"]);
        assert!(d.rationale.contains("set algorithm from shell to heap"), "{d:?}");
        d.check("sweep").unwrap();
        assert_eq!(p.params, json!({"algorithm": "heap"}));
        protocol::names::check_branch(&p.id).unwrap();
        let ids: BTreeSet<_> = ps.iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn never_repeats_and_exhausts() {
        let space = demo_space();
        let mut history = Vec::new();
        let mut all = Vec::new();
        for _ in 0..20 {
            let ps = propose_sweep(BASE, "params.toml", &space, &history, &[], 3).unwrap();
            assert!(ps.len() <= 3);
            for p in &ps {
                history.push(tried(&p.approach_key(), TriedOutcome::Held, 0.0));
                all.push(p.approach_key());
            }
            if ps.is_empty() {
                break;
            }
        }
        // Every value except the baseline's, each exactly once: 4 + 6 + 1.
        let unique: BTreeSet<_> = all.iter().cloned().collect();
        assert_eq!((all.len(), unique.len()), (11, 11), "{all:?}");
        assert!(!unique.contains("algorithm=shell") && !unique.contains("cutoff=16") && !unique.contains("label=x"));
        // The last call before exhaustion returns what is left (11 = 3 + 3 + 3 + 2).
        let left = propose_sweep(BASE, "params.toml", &space, &history[..9], &[], 3).unwrap();
        assert_eq!(left.len(), 2);
        assert!(propose_sweep(BASE, "params.toml", &space, &history, &[], 3).unwrap().is_empty());
    }

    #[test]
    fn honours_banned() {
        let banned = vec!["algorithm=heap".to_string(), "cutoff=32".to_string(), "label=y".to_string()];
        let ps = propose_sweep(BASE, "params.toml", &demo_space(), &[], &banned, 3).unwrap();
        assert_eq!(keys(&ps), ["algorithm=merge", "cutoff=8", "algorithm=std"]);
    }

    #[test]
    fn history_orders_parameters_and_values() {
        let history = [
            tried("algorithm=heap", TriedOutcome::Rejected, -0.2),
            tried("cutoff=32", TriedOutcome::Passed, 0.1),
            tried("label=y", TriedOutcome::Held, 0.0),
        ];
        let space = space(
            "algorithm = [\"insertion-hybrid\", \"merge\", \"shell\", \"heap\", \"std\"]\n\
             cutoff = [4, 8, 16, 32, 64, 256, 2048]\nlabel = [\"x\", \"y\", \"z\"]\nzeta = [1, 2]\n",
        );
        let ps = propose_sweep(BASE, "params.toml", &space, &history, &[], 10).unwrap();
        // cutoff helped: first, and 64 (next to the good 32) before 8 (next to the baseline's 16,
        // but before it in the list). zeta untried (not in the config: list order), then label
        // (held), then algorithm (only hurt): std is as far from the baseline's shell as
        // insertion-hybrid but next to heap, which hurt, so it comes after.
        assert_eq!(
            keys(&ps),
            [
                "cutoff=64",
                "zeta=1",
                "label=z",
                "algorithm=merge",
                "cutoff=8",
                "zeta=2",
                "algorithm=insertion-hybrid",
                "cutoff=256",
                "algorithm=std",
                "cutoff=4",
            ]
        );

        // The better a parameter's best change, the earlier it comes among those that helped.
        let history =
            [tried("algorithm=heap", TriedOutcome::Passed, 0.1), tried("cutoff=32", TriedOutcome::Promoted, 0.3)];
        let ps = propose_sweep(BASE, "params.toml", &demo_space(), &history, &[], 2).unwrap();
        assert_eq!(keys(&ps), ["cutoff=64", "algorithm=std"]);
    }

    #[test]
    fn json_configs_and_missing_keys() {
        let base = "{\n  \"sort\": {\n    \"cutoff\": 16\n  }\n}\n";
        let space = space("\"sort.cutoff\" = [16, 32]\n\"sort.fast\" = [true]\n");
        let ps = propose_sweep(base, "conf.json", &space, &[], &[], 5).unwrap();
        assert_eq!(keys(&ps), ["sort.cutoff=32", "sort.fast=true"]);
        assert_eq!(ps[0].edits[0].content, base.replace("16", "32"));
        assert_eq!(ps[1].summary, "set sort.fast from unset to true in conf.json");
        let doc: Json = serde_json::from_str(&ps[1].edits[0].content).unwrap();
        assert_eq!(doc, json!({"sort": {"cutoff": 16, "fast": true}}));
    }

    #[test]
    fn a_broken_baseline_is_an_error_naming_the_file() {
        let e = propose_sweep("a = ", "params.toml", &demo_space(), &[], &[], 1).unwrap_err().to_string();
        assert!(e.starts_with("params.toml: not valid TOML"), "{e}");
    }
}
