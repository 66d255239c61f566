//! Property-based tests of the parsers of `agents.toml` and of the governance settings blocks:
//! arbitrary text and structured mutations of valid documents never panic, valid documents
//! round-trip, and a refused document gets an error that names the file, a line in it, the field
//! and a fix.
//!
//! Cases per property: 64 by default (seconds in `tests/run`); `PROPTEST_CASES=5000 cargo test
//! -p ratchet-protocol proptests` runs longer.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::config::{AgentsFile, ConfigError};
use crate::governance::{
    self, CadenceFile, ConstitutionFile, EthosFile, GovernanceError, parse_cadence, parse_constitution, parse_ethos,
};

/// 64 cases unless `PROPTEST_CASES` says otherwise.
pub(crate) fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 64;
    }
    c
}

const CONSTITUTION: &str = include_str!("../../constitution.md");
const ETHOS: &str = include_str!("../../ethos.md");
const CADENCE: &str = include_str!("../../cadence.md");

/// A cadence with the sweep strategy (the repository's own uses `command`).
const SWEEP_CADENCE: &str = "# Cadence\n\n```toml ratchet\n[cadence]\ncandidates = 2\nwarmup = 0\n\
stall_limit = 3\nbreaker_limit = 3\nlease_ttl_s = 30\nmax_attempts = 3\npromotion = \"approval\"\nmax_cycles = 0\n\
max_wall_s = 0\n\n[proposer]\nstrategy = \"sweep\"\nfile = \"params.toml\"\n\n[proposer.space]\n\
delay_ms = [300, 100]\nlabel = [\"a\", \"b\"]\n```\n";

/// A TOML value, valid or odd, to put where a setting's value was.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("[\"\"]".to_string()),
        Just("true".to_string()),
        Just("1e400".to_string()),
        Just("nan".to_string()),
        Just("{}".to_string()),
        Just("18446744073709551616".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
        "\\PC{0,12}",
    ]
}

/// A change to one line of a document.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    /// Replace the value of a `key = value` line.
    Value(usize, String),
    /// Insert a line before the given one.
    Insert(usize, String),
    /// Cut the text at a byte offset (moved to a character boundary).
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), toml_value()).prop_map(|(i, v)| Mutation::Value(i, v)),
        (
            any::<usize>(),
            prop_oneof![
                Just("unknown_key = 1".to_string()),
                Just("[unknown_table]".to_string()),
                Just("```".to_string()),
                Just("```toml ratchet".to_string()),
                "\\PC{0,30}",
            ]
        )
            .prop_map(|(i, l)| Mutation::Insert(i, l)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let n = lines.len().max(1);
    match m {
        Mutation::Delete(i) => {
            if !lines.is_empty() {
                lines.remove(i % n);
            }
        }
        Mutation::Duplicate(i) => {
            if !lines.is_empty() {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
        }
        Mutation::Value(i, v) => {
            let at = i % n;
            // The first `key = value` line at or after `at`, wrapping around.
            if let Some(j) = (0..lines.len()).map(|k| (at + k) % lines.len()).find(|j| lines[*j].contains(" = ")) {
                let key = lines[j].split(" = ").next().unwrap_or_default().to_string();
                lines[j] = format!("{key} = {v}");
            }
        }
        Mutation::Insert(i, l) => lines.insert(i % (lines.len() + 1), l.clone()),
        Mutation::Truncate(at) => {
            let mut cut = at % (text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return text[..cut].to_string();
        }
    }
    lines.join("\n") + "\n"
}

/// What every refusal must say: the file, a line of it (0 when the problem is not on one line),
/// the field, the problem and the fix.
fn check_governance_error(e: &GovernanceError, file: &str, text: &str) {
    assert_eq!(e.file, file, "{e}");
    assert!(e.line <= text.lines().count() + 1, "line {} of {} lines: {e}", e.line, text.lines().count());
    assert!(!e.field.is_empty() && !e.problem.is_empty() && !e.fix.is_empty(), "{e:?}");
    assert!(e.to_string().contains("; fix: "), "{e}");
}

fn check_config_error(e: &ConfigError, text: &str) {
    assert_eq!(e.file, "agents.toml", "{e}");
    assert!(
        e.line >= 1 && e.line <= text.lines().count() + 1,
        "line {} of {} lines: {e}",
        e.line,
        text.lines().count()
    );
    assert!(!e.field.is_empty() && !e.problem.is_empty() && !e.fix.is_empty(), "{e:?}");
}

/// Wrap settings (TOML) into a document the way the templates do.
fn document(title: &str, toml: &str) -> String {
    format!("# {title}\n\nProse for people.\n\n```toml ratchet\n{toml}```\n\nMore prose.\n")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_parsed_or_refused_with_a_located_error(text in "\\PC{0,400}", bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        for t in [&text, &lossy] {
            if let Err(e) = parse_constitution(t) { check_governance_error(&e, governance::CONSTITUTION, t) }
            if let Err(e) = parse_ethos(t) { check_governance_error(&e, governance::ETHOS, t) }
            if let Err(e) = parse_cadence(t) { check_governance_error(&e, governance::CADENCE, t) }
            if let Err(e) = AgentsFile::parse(t, "agents.toml") { check_config_error(&e, t) }
        }
    }

    #[test]
    fn settings_blocks_are_found_between_their_fences(prose in "[^`]{0,80}", body in "[^`]{0,80}", after in "[^`]{0,40}") {
        let doc = format!("{prose}\n```toml ratchet\n{body}\n```\n{after}");
        let (line, found) = governance::settings_block("x.md", &doc).expect("one block");
        prop_assert_eq!(found, format!("{body}\n"));
        prop_assert_eq!(line, prose.matches('\n').count() + 3);
        // Two blocks, or one never closed: refused, naming the line.
        let two = format!("{doc}\n```toml ratchet\n```\n");
        let e = governance::settings_block("x.md", &two).expect_err("two blocks");
        prop_assert!(e.problem.contains("second"), "{}", e);
        let open = format!("{prose}\n```toml ratchet\n{body}\n");
        let e = governance::settings_block("x.md", &open).expect_err("never closed");
        prop_assert!(e.problem.contains("never closed"), "{}", e);
    }

    #[test]
    fn mutated_governance_documents_never_panic(doc in 0usize..4, muts in proptest::collection::vec(mutation(), 1..4)) {
        let (file, base) = [
            (governance::CONSTITUTION, CONSTITUTION),
            (governance::ETHOS, ETHOS),
            (governance::CADENCE, CADENCE),
            (governance::CADENCE, SWEEP_CADENCE),
        ][doc];
        let mut text = base.to_string();
        for m in &muts {
            text = apply(&text, m);
        }
        let result = match file {
            governance::CONSTITUTION => parse_constitution(&text).map(|_| ()),
            governance::ETHOS => parse_ethos(&text).map(|_| ()),
            _ => parse_cadence(&text).map(|_| ()),
        };
        if let Err(e) = result {
            check_governance_error(&e, file, &text);
        }
    }

    #[test]
    fn an_unknown_key_or_a_wrong_type_names_its_field(doc in 0usize..4, wrong in prop_oneof![Just("[1]"), Just("{ a = 1 }"), Just("true")]) {
        let (file, base) = [
            (governance::CONSTITUTION, CONSTITUTION),
            (governance::ETHOS, ETHOS),
            (governance::CADENCE, CADENCE),
            (governance::CADENCE, SWEEP_CADENCE),
        ][doc];
        let parse = |t: &str| match file {
            governance::CONSTITUTION => parse_constitution(t).map(|_| ()),
            governance::ETHOS => parse_ethos(t).map(|_| ()),
            _ => parse_cadence(t).map(|_| ()),
        };
        let table = ["[constitution]", "[ethos]", "[cadence]", "[cadence]"][doc];
        let unknown = base.replacen(table, &format!("{table}\nmistyped_key = 1"), 1);
        let e = parse(&unknown).expect_err("an unknown key");
        prop_assert_eq!(&e.field, "mistyped_key");
        prop_assert_eq!(e.line, base.lines().position(|l| l == table).expect("table") + 2, "{}", e);
        // A number setting given a value of another type.
        let key = ["max_diff_lines", "min_rounds", "stall_limit", "stall_limit"][doc];
        let line = base.lines().find(|l| l.starts_with(&format!("{key} = "))).expect("key");
        let bad = base.replacen(line, &format!("{key} = {wrong}"), 1);
        let e = parse(&bad).expect_err("a wrong type");
        check_governance_error(&e, file, &bad);
        prop_assert!(e.problem.contains("invalid type"), "{}", e);
        prop_assert_eq!(&e.field, key);
        prop_assert_eq!(e.line, base.lines().position(|l| l == line).expect("line") + 1, "{}", e);
    }

    #[test]
    fn valid_governance_settings_round_trip(
        max_diff_lines in 1u64..100_000,
        files in 1u64..1000,
        paths in proptest::collection::vec("[a-z*/.]{1,20}", 1..6),
        stall_limit in 1u32..50,
        confidence in 0.5f64..0.999,
        min_rounds in 1u32..30,
    ) {
        let mut c = parse_constitution(CONSTITUTION).expect("the repository's constitution.md");
        c.max_diff_lines = max_diff_lines;
        c.max_files_changed = files;
        c.protected_paths = paths;
        let text = document("Constitution", &toml::to_string(&ConstitutionFile { constitution: c.clone() }).expect("toml"));
        prop_assert_eq!(parse_constitution(&text).expect("a valid constitution"), c);

        let mut e = parse_ethos(ETHOS).expect("the repository's ethos.md");
        e.confidence = confidence;
        e.min_rounds = min_rounds;
        let text = document("Ethos", &toml::to_string(&EthosFile { ethos: e.clone() }).expect("toml"));
        prop_assert_eq!(parse_ethos(&text).expect("a valid ethos"), e);

        for base in [CADENCE, SWEEP_CADENCE] {
            let (mut cadence, proposer) = parse_cadence(base).expect("a valid cadence");
            cadence.stall_limit = stall_limit;
            let file = CadenceFile { cadence: cadence.clone(), proposer: proposer.clone() };
            let text = document("Cadence", &toml::to_string(&file).expect("toml"));
            prop_assert_eq!(parse_cadence(&text).expect("a valid cadence"), (cadence, proposer));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// agents.toml

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    role: String,
    /// argv, or None for a url member.
    command: Option<Vec<String>>,
    port: u16,
    env: BTreeMap<String, String>,
    skills: Vec<String>,
    required: Option<bool>,
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        "[a-z][a-z0-9_-]{0,15}",
        prop_oneof![
            Just("proposer".to_string()),
            Just("executor".to_string()),
            Just("critic".to_string()),
            Just("evaluator".to_string()),
            Just("coordinator".to_string()),
            "[a-z][a-z-]{0,12}"
        ],
        proptest::option::of(proptest::collection::vec("\\PC{1,20}", 1..4)),
        1u16..,
        proptest::collection::btree_map("[A-Z][A-Z0-9_]{0,10}", "\\PC{0,20}", 0..3),
        proptest::collection::vec("[a-z][a-z-]{0,10}", 0..3),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(name, role, command, port, env, skills, required)| Entry {
            name,
            role,
            command: command.filter(|c| !c[0].trim().is_empty()),
            port,
            env,
            skills,
            required,
        })
}

/// `[[agent]]` tables as a person would write them (strings quoted by the toml crate).
fn agents_toml(entries: &[Entry]) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut out = String::from("# The swarm\n");
    for e in entries {
        out.push_str(&format!("\n[[agent]]\nname = {}\nrole = {}\n", q(&e.name), q(&e.role)));
        match &e.command {
            Some(c) => {
                out.push_str(&format!("command = [{}]\n", c.iter().map(|a| q(a)).collect::<Vec<_>>().join(", ")))
            }
            None => out.push_str(&format!("url = \"http://127.0.0.1:{}/\"\n", e.port)),
        }
        if !e.env.is_empty() {
            let env: Vec<String> = e.env.iter().map(|(k, v)| format!("{k} = {}", q(v))).collect();
            out.push_str(&format!("env = {{ {} }}\n", env.join(", ")));
        }
        if !e.skills.is_empty() {
            out.push_str(&format!("skills = [{}]\n", e.skills.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")));
        }
        if let Some(r) = e.required {
            out.push_str(&format!("required = {r}\n"));
        }
    }
    out
}

fn unique(entries: Vec<Entry>) -> Vec<Entry> {
    let mut seen = std::collections::BTreeSet::new();
    entries.into_iter().filter(|e| seen.insert(e.name.clone())).collect()
}

/// A targeted breakage of entry `i`, and the field the error must name.
#[derive(Debug, Clone)]
enum Breakage {
    BadName(&'static str),
    NoRole,
    EmptyRole,
    Both,
    Neither,
    EmptyCommand,
    NotHttp,
    UnknownKey,
    /// `required` given a string.
    WrongType,
    Duplicate,
}

fn breakage() -> impl Strategy<Value = Breakage> {
    prop_oneof![
        prop_oneof![Just(""), Just("../x"), Just("a b"), Just(".hidden"), Just("-x"), Just("a/b")]
            .prop_map(Breakage::BadName),
        Just(Breakage::NoRole),
        Just(Breakage::EmptyRole),
        Just(Breakage::Both),
        Just(Breakage::Neither),
        Just(Breakage::EmptyCommand),
        Just(Breakage::NotHttp),
        Just(Breakage::UnknownKey),
        Just(Breakage::WrongType),
        Just(Breakage::Duplicate),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn valid_agents_files_round_trip(entries in proptest::collection::vec(entry(), 1..6)) {
        let entries = unique(entries);
        let text = agents_toml(&entries);
        let parsed = AgentsFile::parse(&text, "agents.toml").map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed.agents.len(), entries.len());
        for (p, e) in parsed.agents.iter().zip(&entries) {
            prop_assert_eq!(&p.name, &e.name);
            prop_assert_eq!(&p.role, &e.role);
            prop_assert_eq!(&p.command, &e.command);
            prop_assert_eq!(p.url.is_some(), e.command.is_none());
            prop_assert_eq!(&p.env, &e.env);
            prop_assert_eq!(&p.skills, &e.skills);
            prop_assert_eq!(p.required, e.required);
        }
        // What the parser reads, written back, reads the same.
        let again = toml::to_string(&parsed).expect("agents.toml serializes");
        prop_assert_eq!(AgentsFile::parse(&again, "agents.toml").expect("round trip"), parsed);
    }

    #[test]
    fn a_broken_entry_is_refused_naming_its_line_and_field(entries in proptest::collection::vec(entry(), 1..5), which in any::<usize>(), b in breakage()) {
        let mut entries = unique(entries);
        let i = which % entries.len();
        let text = agents_toml(&entries);
        // The line of entry i's header, and the text of that entry's table.
        let header = text.lines().enumerate().filter(|(_, l)| *l == "[[agent]]").nth(i).expect("header").0 + 1;
        let (field, text) = match b {
            Breakage::BadName(n) => {
                entries[i].name = n.to_string();
                ("name", agents_toml(&entries))
            }
            Breakage::EmptyRole => {
                entries[i].role = " ".into();
                ("role", agents_toml(&entries))
            }
            Breakage::NoRole
            | Breakage::Both
            | Breakage::Neither
            | Breakage::EmptyCommand
            | Breakage::NotHttp
            | Breakage::UnknownKey
            | Breakage::WrongType => {
                let mut lines: Vec<String> = text.lines().map(String::from).collect();
                let role_line = header + 1; // 0-based index of the line after `name`
                let target = lines.iter().skip(role_line).position(|l| l.starts_with("command = ") || l.starts_with("url = ")).expect("command or url") + role_line;
                let field = match b {
                    Breakage::NoRole => { lines.remove(role_line); "role" }
                    Breakage::Both => { lines.insert(target, "url = \"http://127.0.0.1:1/\"".into()); lines.insert(target, "command = [\"x\"]".into()); lines.remove(target + 2); "url" }
                    Breakage::Neither => { lines.remove(target); "command" }
                    Breakage::EmptyCommand => { lines[target] = "command = []".into(); "command" }
                    Breakage::NotHttp => { lines[target] = "url = \"ftp://127.0.0.1/\"".into(); "url" }
                    Breakage::WrongType => { lines.insert(role_line, "required = \"yes\"".into()); "required" }
                    _ => { lines.insert(role_line, "colour = \"red\"".into()); "colour" }
                };
                (field, lines.join("\n") + "\n")
            }
            Breakage::Duplicate => {
                let dup = entries[i].clone();
                entries.push(dup);
                ("name", agents_toml(&entries))
            }
        };
        let e = AgentsFile::parse(&text, "agents.toml").expect_err(&format!("refused:\n{text}"));
        check_config_error(&e, &text);
        prop_assert_eq!(e.field.as_str(), field, "{}\n{}", e, text);
        if !matches!(b, Breakage::Duplicate) {
            // The error points into the broken entry's table.
            let next = text.lines().enumerate().filter(|(_, l)| *l == "[[agent]]").nth(i + 1).map_or(usize::MAX, |(n, _)| n + 1);
            prop_assert!(e.line >= header && e.line < next, "line {} outside entry {} (lines {}..{}): {}\n{}", e.line, i, header, next, e, text);
        }
    }

    #[test]
    fn mutated_agents_files_never_panic(entries in proptest::collection::vec(entry(), 1..4), muts in proptest::collection::vec(mutation(), 1..4)) {
        let mut text = agents_toml(&unique(entries));
        for m in &muts {
            text = apply(&text, m);
        }
        if let Err(e) = AgentsFile::parse(&text, "agents.toml") {
            check_config_error(&e, &text);
        }
    }
}
