//! Following the coordinator's `loop` skill over A2A streaming: each progress note becomes a
//! line on the terminal (plain lines; when stdout is a terminal, each is prefixed by the elapsed
//! time so a long benchmark still shows the loop is alive).

use std::io::IsTerminal;
use std::time::Instant;

use futures_util::StreamExt;
use kit::client::{A2aClient, skill_message};
use protocol::{StreamEvent, TaskState};
use serde_json::{Value, json};

use super::LoopRequest;
use super::ui::say;

pub(super) async fn follow_loop(url: &str, token: Option<String>, request: &LoopRequest) -> Result<Value, String> {
    let client = A2aClient::new(url).with_token(token);
    let msg = skill_message("loop", json!({"max_cycles": request.max_cycles, "fresh": request.fresh}));
    let params = json!({"message": msg});
    let stream = client.stream("message/stream", params, None).await.map_err(|e| e.to_string())?;
    let mut stream = std::pin::pin!(stream);
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let show = |text: &str| {
        for line in text.lines() {
            if tty {
                let t = started.elapsed().as_secs();
                say(&format!("[{:>2}:{:02}] {line}", t / 60, t % 60));
            } else {
                say(line);
            }
        }
    };
    while let Some(item) = stream.next().await {
        let (_, event) = item.map_err(|e| e.to_string())?;
        let StreamEvent::Status(s) = event else { continue };
        let text = s.status.message.as_ref().map(|m| m.text()).unwrap_or_default();
        match s.status.state {
            TaskState::Working => show(&text),
            TaskState::Completed => {
                let data = s.status.message.as_ref().and_then(|m| m.data()).cloned().unwrap_or_default();
                return Ok(Value::Object(data));
            }
            other => return Err(format!("the loop ended {other:?}: {text}")),
        }
    }
    Err("the coordinator closed the stream before the loop ended".into())
}
