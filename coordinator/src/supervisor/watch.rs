//! Live `agents.toml`: watch the home directory (editors replace the file rather than write it in
//! place, which a watch on the file itself would lose) and report, debounced, that it changed.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use notify::event::{AccessKind, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Editors save in several steps (truncate, write, rename); look once they are quiet this long.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Start watching `<home>/agents.toml`. Keep the returned watcher alive; each `()` received means
/// "the file may have changed, read it again".
pub fn watch_config(home: &Path) -> notify::Result<(RecommendedWatcher, mpsc::UnboundedReceiver<()>)> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        // Opening the file (our own reads included) is not a change.
        if matches!(event.kind, EventKind::Access(AccessKind::Open(_) | AccessKind::Read)) {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == Some(OsStr::new("agents.toml"))) {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(home, RecursiveMode::NonRecursive)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            loop {
                match tokio::time::timeout(DEBOUNCE, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok((watcher, rx))
}
