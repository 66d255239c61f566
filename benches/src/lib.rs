//! What the bench binaries share.

pub mod report;
pub mod scratch;

#[cfg(test)]
mod tests {
    use crate::report::write_section;

    #[test]
    fn a_section_is_replaced_in_place_and_a_new_one_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("BENCHMARKS.md");
        std::fs::write(&p, "# Benchmarks\n\n## A\n\nold a\n\n## B\n\nb\n").expect("write");
        write_section(&p, "## A", "## A\n\nnew a\n").expect("replace");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nb\n");
        write_section(&p, "## C", "## C\n\nc").expect("append");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nb\n\n## C\n\nc\n"
        );
        write_section(&p, "## B", "## B\n\nb2\n").expect("replace in the middle");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nb2\n\n## C\n\nc\n"
        );
    }
}
