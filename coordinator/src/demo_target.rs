//! The demo target embedded in the binary: `ratchet demo` writes these files into a fresh git
//! repository and lets the swarm improve it.
//!
//! The target (coordinator/demo-target/, a crate of its own with no dependencies) sorts 200,000
//! pseudo-random `u64` values with the algorithm and settings of `params.toml`; its benchmark
//! prints the median milliseconds as JSON. Its baseline (heap sort) is several times slower than
//! the best setting (`algorithm = "std"`), `cutoff = 2048` is a clear regression for the
//! insertion-hybrid and merge sorts, and `label` changes nothing measured.

/// Every file of the demo target: (path relative to the target's root, contents).
pub const FILES: &[(&str, &str)] = &[
    (".gitignore", include_str!("../demo-target/.gitignore")),
    ("Cargo.lock", include_str!("../demo-target/Cargo.lock")),
    ("Cargo.toml", include_str!("../demo-target/Cargo.toml")),
    ("README.md", include_str!("../demo-target/README.md")),
    ("bench/main.rs", include_str!("../demo-target/bench/main.rs")),
    ("bench/params.rs", include_str!("../demo-target/bench/params.rs")),
    ("cadence.md", include_str!("../demo-target/cadence.md")),
    ("constitution.md", include_str!("../demo-target/constitution.md")),
    ("ethos.md", include_str!("../demo-target/ethos.md")),
    ("params.toml", include_str!("../demo-target/params.toml")),
    ("src/lib.rs", include_str!("../demo-target/src/lib.rs")),
    ("src/sort.rs", include_str!("../demo-target/src/sort.rs")),
    ("tests/sorts.rs", include_str!("../demo-target/tests/sorts.rs")),
];

/// The contents of one embedded file.
pub fn file(path: &str) -> Option<&'static str> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, text)| *text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    use protocol::governance::{self, Governance};

    #[test]
    fn files_list_every_file_of_the_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo-target");
        fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
                // A build inside the directory (by hand) leaves target/, which is not part of it.
                if rel == "target" {
                    continue;
                }
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    out.insert(rel);
                }
            }
        }
        let mut on_disk = BTreeSet::new();
        walk(&root, &root, &mut on_disk);
        let listed: BTreeSet<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(listed.len(), FILES.len(), "a file is listed twice");
        assert_eq!(listed, on_disk, "coordinator/src/demo_target.rs FILES and coordinator/demo-target/ differ");
        for (path, text) in FILES {
            assert_eq!(
                std::fs::read_to_string(root.join(path)).unwrap(),
                *text,
                "{path} is listed with other contents"
            );
        }
    }

    #[test]
    fn governance_docs_parse() {
        let texts = governance::DOCS.iter().map(|d| (d.to_string(), file(d).expect("embedded").to_string())).collect();
        let g = Governance::from_texts(texts).unwrap();
        assert_eq!(g.ethos.benchmark, "cargo run --release --offline --quiet -- bench");
        assert_eq!(g.ethos.metric, "ms");
        assert_eq!((g.cadence.candidates, g.cadence.warmup), (3, 1));
        assert_eq!((g.ethos.pairing, g.ethos.min_rounds, g.ethos.max_rounds), (governance::Pairing::Sequential, 5, 20));
        assert_eq!((g.cadence.stall_limit, g.cadence.breaker_limit), (3, 5));
        assert_eq!(g.proposer.strategy, "sweep");
        assert_eq!(g.proposer.file.as_deref(), Some("params.toml"));

        // The benchmark and the governance docs are protected; the code under improvement is not.
        let protected = |path: &str| g.constitution.protected_paths.iter().any(|p| governance::glob_match(p, path));
        for path in ["bench/main.rs", "bench/params.rs", "Cargo.toml", "Cargo.lock", "ethos.md", "cadence.md"] {
            assert!(protected(path), "{path} is not protected");
        }
        for path in ["src/sort.rs", "params.toml", "tests/sorts.rs"] {
            assert!(!protected(path), "{path} is protected");
        }
        for path in FILES.iter().map(|(p, _)| *p).filter(|p| p.starts_with("bench/")) {
            assert!(g.ethos.benchmark_paths.iter().any(|b| governance::glob_match(b, path)), "{path}");
        }
    }

    #[test]
    fn the_space_matches_the_baseline_params() {
        let texts = governance::DOCS.iter().map(|d| (d.to_string(), file(d).expect("embedded").to_string())).collect();
        let g = Governance::from_texts(texts).unwrap();
        let params = file("params.toml").expect("embedded");
        let lines: BTreeSet<&str> = params.lines().filter(|l| !l.starts_with('#') && l.contains('=')).collect();
        assert_eq!(lines.len(), g.proposer.space.len(), "params.toml and [proposer.space] name different keys");
        for (key, values) in &g.proposer.space {
            assert!(
                values.iter().any(|v| lines.contains(format!("{key} = {v}").as_str())),
                "the baseline's {key} is missing from params.toml or its value is not in the space"
            );
        }
    }
}
