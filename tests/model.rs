//! The local model route in tests: a real OpenAI-compatible server process
//! (`scripts/model/serve`, node-llama-cpp over SmolLM2-135M-Instruct) on a free loopback port,
//! installed by `scripts/model/install` (which `tests/run` runs first).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ProcGuard, hermetic};

/// The model id the route serves in tests.
pub const MODEL_ID: &str = "smollm2-135m-instruct";
/// The environment variable holding a test server's key (what `api_key_env` names).
pub const KEY_ENV: &str = "RATCHET_MODEL_KEY";

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace").to_path_buf()
}

/// Where `scripts/model/install` put the route (`RATCHET_MODEL_DIR`, else `target/model`).
pub fn model_dir() -> PathBuf {
    let dir =
        std::env::var_os("RATCHET_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target/model"));
    assert!(
        dir.join("installed").is_file(),
        "the local model route is not installed in {}: run scripts/model/install (tests/run does)",
        dir.display()
    );
    dir
}

/// One model server at a time in this test binary: inference is CPU-bound, and the other tests
/// measure benchmarks on the same two cores.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This test's turn to run model servers (for a test that starts them another way, e.g. through
/// `ratchet demo --model`); held until it drops.
pub fn model_turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running model server (and this test's turn to run one: held until it drops).
pub struct ModelServer {
    pub proc: ProcGuard,
    /// Base URL, `http://127.0.0.1:<port>/v1`.
    pub url: String,
    /// The id it serves (`--name`).
    pub model: String,
    /// Its bearer key (in [`KEY_ENV`] for the agents).
    pub key: String,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl ModelServer {
    /// Start the route serving the model as `model` (the id requests must name), with a key.
    pub fn start(model: &str) -> ModelServer {
        let turn = model_turn();
        let dir = model_dir();
        let key = format!("test-model-key-{}", std::process::id());
        let home = std::env::temp_dir();
        let mut cmd = Command::new(workspace().join("scripts/model/serve"));
        hermetic(&mut cmd, &home);
        cmd.args(["--port", "0", "--name", model])
            .env("RATCHET_MODEL_DIR", &dir)
            .env(KEY_ENV, &key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut proc = ProcGuard::spawn(cmd);
        let lines = kit::agent::StdoutLines::spawn(proc.child.stdout.take().expect("piped stdout"));
        let url = lines.listening(Duration::from_secs(90)).unwrap_or_else(|e| panic!("the model server: {e}"));
        ModelServer { proc, url, model: model.to_string(), key, _turn: turn }
    }

    /// The body of a `[constitution.models.<name>]` table declaring this server.
    pub fn declaration(&self, extra: &str) -> String {
        format!("url = {:?}\nmodel = {:?}\napi_key_env = {KEY_ENV:?}\n{extra}", self.url, self.model)
    }

    /// A chat completion straight from the server (for checks beside the swarm's own calls).
    pub fn chat(&self, body: serde_json::Value) -> serde_json::Value {
        let rt = crate::rt();
        rt.block_on(async {
            let resp = reqwest::Client::new()
                .post(format!("{}/chat/completions", self.url))
                .bearer_auth(&self.key)
                .json(&body)
                .send()
                .await
                .expect("the model server answers");
            resp.json().await.expect("a JSON answer")
        })
    }
}
