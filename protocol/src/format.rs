//! Versioned file formats: every file one Ratchet process writes and another reads carries a
//! format version (`version`, or `v` in the formats that began with it), and every reader checks
//! it first, refusing a newer version than its build knows with a message that says so.

use serde::{Deserialize, Serialize};

/// Write `v` as a JSON value writes it: object keys in alphabetical order at every depth. For a
/// typed field that was a `serde_json::Value` before (`#[serde(serialize_with = ...)]`), so the
/// bytes stay what they were.
pub fn as_json_value<T: Serialize, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(v).map_err(serde::ser::Error::custom)?.serialize(s)
}

/// A file this build cannot use.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "{what} version {found} is newer than this build of Ratchet reads (up to {supported}); fix: run one Ratchet build for every member of the swarm (upgrade the older binaries)"
    )]
    Newer { what: &'static str, found: u32, supported: u32 },
    #[error("not a valid {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Parse a file of format `what` whose newest known version is `supported`: the `version` (or `v`) field
/// is checked first, so a newer file is refused as such instead of failing on a field it added
/// (or, worse, parsing while meaning something else).
pub fn parse_versioned<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    supported: u32,
) -> Result<T, FormatError> {
    #[derive(Deserialize)]
    struct Version {
        #[serde(alias = "v")]
        version: u32,
    }
    if let Ok(v) = serde_json::from_slice::<Version>(bytes)
        && v.version > supported
    {
        return Err(FormatError::Newer { what, found: v.version, supported });
    }
    serde_json::from_slice(bytes).map_err(|source| FormatError::Json { what, source })
}
