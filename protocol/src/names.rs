//! Validation of every name that reaches the file system: branch names, task ids, artefact
//! names. A name that passes can be joined under `worktrees/` without escaping it.

/// Longest accepted name, in bytes (well under NAME_MAX and git's ref limits).
pub const MAX_NAME_LEN: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {shown:?}: {problem}; use 1-100 characters from [A-Za-z0-9._-], not starting with '.' or '-'")]
pub struct NameError {
    pub what: &'static str,
    pub shown: String,
    pub problem: &'static str,
}

/// Check a single path component: a task id, an artefact name, an agent id.
pub fn check_component(what: &'static str, name: &str) -> Result<(), NameError> {
    let err = |problem| Err(NameError { what, shown: name.chars().take(120).collect(), problem });
    if name.is_empty() {
        return err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return err("it is too long");
    }
    if name.contains('\0') {
        return err("it contains NUL");
    }
    if name.chars().any(|c| c.is_control()) {
        return err("it contains a control character");
    }
    if name.contains('/') || name.contains('\\') {
        return err("it contains a path separator");
    }
    if name == "." || name == ".." || name.contains("..") {
        return err("it contains '..'");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return err("it starts with '.' or '-'");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return err("it contains a character outside [A-Za-z0-9._-]");
    }
    if name.ends_with(".lock") {
        return err("it ends with '.lock', which git reserves");
    }
    Ok(())
}

/// Check a candidate branch name. Branches are single components too (no `/`), so that
/// `worktrees/<branch>/` is always one directory level below `worktrees/`.
pub fn check_branch(name: &str) -> Result<(), NameError> {
    check_component("branch name", name)
}

pub fn check_task_id(name: &str) -> Result<(), NameError> {
    check_component("task id", name)
}

pub fn check_artifact(name: &str) -> Result<(), NameError> {
    check_component("artefact name", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        for bad in ["", "..", "../x", "a/b", "/abs", "a\0b", "a\nb", ".hidden", "-flag", "x.lock", "a..b", "é"] {
            assert!(check_task_id(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_branch(&"a".repeat(101)).is_err());
        for good in ["c1-sweep-3", "task_0001", "v1.2", "A-b_c.d"] {
            check_branch(good).unwrap();
        }
        let e = check_task_id("../etc").unwrap_err().to_string();
        assert!(e.contains("task id") && e.contains("path separator"), "{e}");
    }
}
