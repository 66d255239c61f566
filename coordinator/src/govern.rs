//! The governance in force for the loop: the approved texts of constitution.md, ethos.md and
//! cadence.md, parsed and validated.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use protocol::governance::{DOCS, Governance};

/// Load the governance in force for the swarm at `home`.
pub fn load(home: &Path) -> anyhow::Result<Governance> {
    let mut texts = BTreeMap::new();
    for doc in DOCS {
        let path = home.join(doc);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read; fix: restore it or run `ratchet init`", path.display()))?;
        texts.insert(doc.to_string(), text);
    }
    Ok(Governance::from_texts(texts)?)
}
