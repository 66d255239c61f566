//! Following the coordinator's `loop` skill over A2A streaming: each progress note becomes a
//! line on the terminal (plain lines; when stdout is a terminal, each is prefixed by the elapsed
//! time so a long benchmark still shows the loop is alive).
//!
//! The follower survives the coordinator: when the stream breaks it reconnects, with
//! `tasks/resubscribe` and `Last-Event-ID` while the same coordinator process serves (a dropped
//! connection), and by attaching to the run it was following (`{"attach": <run id>}`, learnt from
//! the stream's `run` artefact) once the supervisor has restarted the coordinator, whose loop
//! resumes from `loop.json` by itself. So `ratchet up --once` and `ratchet demo` end with the
//! resumed run's result. Every wait is bounded: a coordinator that does not come back within
//! [`RECONNECT_WAIT`] ends the follow with an error.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use kit::client::{A2aClient, ClientError, skill_message};
use protocol::{StreamEvent, TaskState};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::LoopRequest;
use super::ui::say;
use super::up::CoordinatorView;
use crate::engine::Summary;

/// How long the follower waits for the coordinator to serve again after the stream broke.
pub const RECONNECT_WAIT: Duration = Duration::from_secs(60);
/// Between two reconnection attempts while the coordinator seems to be the same process (the
/// supervisor may not have noticed its exit yet).
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Opening a stream: the coordinator answers with the event-stream headers at once.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A loop may be quiet for long (a slow benchmark); after this long without an event the
/// follower checks that the coordinator still answers its card, and reconnects if not.
const QUIET_CHECK: Duration = Duration::from_secs(30);

/// Where the follow is: what a reconnection needs.
#[derive(Default)]
struct Followed {
    /// The `loop` task on the coordinator incarnation that runs it.
    task: Option<String>,
    /// The last SSE event id seen on that task.
    last_event: Option<u64>,
    /// The run the loop reported (the `run` artefact).
    run_id: Option<String>,
    /// The coordinator incarnation the task lives on.
    incarnation: u64,
    /// The swarm's bearer token, sent on every call.
    token: Option<String>,
}

/// How one stream ended.
enum Ended {
    Done(Box<Result<Summary, String>>),
    /// The stream broke (connection closed or reset, undecodable reply, or the coordinator
    /// restarted underneath it).
    Lost(String),
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<(Option<u64>, StreamEvent), ClientError>> + Send>>;

/// Follow the loop on the coordinator `coordinator` names, with the swarm's bearer `token`.
pub(super) async fn follow_loop(
    mut coordinator: watch::Receiver<CoordinatorView>,
    token: Option<String>,
    request: &LoopRequest,
) -> Result<Summary, String> {
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
    let mut followed = Followed { token, ..Followed::default() };
    let mut lost: Option<String> = None;
    loop {
        let stream = match lost.take() {
            None => {
                let view = coordinator.borrow().clone();
                let url = view.url.ok_or("no coordinator is ready")?;
                followed.incarnation = view.incarnation;
                open_loop(&url, &followed, request, Ask::AsGiven).await.map_err(|e| e.to_string())?
            }
            Some(why) => reconnect(&mut coordinator, request, &mut followed, &why).await?,
        };
        match consume(stream, &coordinator, &mut followed, &show).await {
            Ended::Done(r) => return *r,
            Ended::Lost(why) => lost = Some(why),
        }
    }
}

/// How to ask the coordinator for the loop.
#[derive(Clone, Copy)]
enum Ask<'a> {
    /// The request as given (the first time).
    AsGiven,
    /// The run this follower was following.
    Attach(&'a str),
    /// Again, without knowing which run it had started: never `fresh` (that would throw away
    /// the run the first request may have started).
    Again,
}

/// `message/stream` to the coordinator's `loop` skill.
async fn open_loop(url: &str, followed: &Followed, request: &LoopRequest, ask: Ask<'_>) -> Result<Events, ClientError> {
    let fresh = request.fresh && matches!(ask, Ask::AsGiven);
    let attach = match ask {
        Ask::Attach(run) => Some(run.to_string()),
        _ => None,
    };
    let input = json!(crate::agent::LoopInput { max_cycles: request.max_cycles, fresh, attach });
    let params = json!({"message": skill_message("loop", input)});
    open(url, followed, "message/stream", params, None).await
}

/// Open an SSE stream, bounded by [`OPEN_TIMEOUT`].
async fn open(
    url: &str,
    followed: &Followed,
    method: &str,
    params: Value,
    last_event: Option<u64>,
) -> Result<Events, ClientError> {
    let client = A2aClient::new(url).with_token(followed.token.clone());
    match tokio::time::timeout(OPEN_TIMEOUT, client.stream(method, params, last_event)).await {
        Ok(stream) => Ok(Box::pin(stream?)),
        Err(_) => Err(ClientError::Decode {
            url: url.to_string(),
            problem: format!("no answer to {method} within {}s", OPEN_TIMEOUT.as_secs()),
        }),
    }
}

/// Read one stream to its end.
async fn consume(
    mut stream: Events,
    coordinator: &watch::Receiver<CoordinatorView>,
    followed: &mut Followed,
    show: &impl Fn(&str),
) -> Ended {
    let incarnation = followed.incarnation;
    let mut gone = coordinator.clone();
    loop {
        enum Next<T> {
            Item(Option<T>),
            Gone,
            Quiet,
        }
        let next = tokio::select! {
            item = stream.next() => Next::Item(item),
            // The supervisor saw the coordinator go: the stream will not say more.
            () = async { let _ = gone.wait_for(|v| v.incarnation != incarnation || v.url.is_none()).await; } => Next::Gone,
            () = tokio::time::sleep(QUIET_CHECK) => Next::Quiet,
        };
        let item = match next {
            Next::Item(item) => item,
            Next::Gone => return Ended::Lost("the coordinator stopped".into()),
            Next::Quiet => {
                let url = coordinator.borrow().url.clone();
                let answers = match url {
                    Some(url) => A2aClient::new(&url).with_token(followed.token.clone()).card().await.is_ok(),
                    None => false,
                };
                if answers {
                    continue;
                }
                return Ended::Lost(format!(
                    "no event for {}s and the coordinator does not answer its card",
                    QUIET_CHECK.as_secs()
                ));
            }
        };
        let (id, event) = match item {
            None => return Ended::Lost("the coordinator closed the stream before the loop ended".into()),
            Some(Err(e)) => return Ended::Lost(e.to_string()),
            Some(Ok(x)) => x,
        };
        if id.is_some() {
            followed.last_event = id;
        }
        match event {
            StreamEvent::Task(t) => followed.task = Some(t.id),
            StreamEvent::Message(m) => {
                return Ended::Done(Box::new(Err(format!("the coordinator answered: {}", m.text()))));
            }
            StreamEvent::Artifact(a) => {
                followed.task = Some(a.task_id);
                let run = a.artifact.parts.iter().find_map(|p| match p {
                    protocol::Part::Data { data, .. } => {
                        serde_json::from_value::<crate::agent::RunArtifact>(Value::Object(data.clone())).ok()
                    }
                    _ => None,
                });
                if a.artifact.name.as_deref() == Some("run")
                    && let Some(run) = run
                {
                    followed.run_id = Some(run.run_id);
                }
            }
            StreamEvent::Status(s) => {
                followed.task = Some(s.task_id.clone());
                let text = s.status.message.as_ref().map(|m| m.text()).unwrap_or_default();
                match s.status.state {
                    TaskState::Working | TaskState::Submitted => show(&text),
                    TaskState::Completed => {
                        let data = s.status.message.as_ref().and_then(|m| m.data()).cloned().unwrap_or_default();
                        return Ended::Done(Box::new(
                            serde_json::from_value::<Summary>(Value::Object(data))
                                .map_err(|e| format!("the loop's summary is not one this build reads: {e}")),
                        ));
                    }
                    other => return Ended::Done(Box::new(Err(format!("the loop ended {other:?}: {text}")))),
                }
            }
        }
    }
}

/// Find the loop again after the stream broke: resubscribe while the same coordinator process
/// serves, attach to the followed run once a new one does. Bounded by [`RECONNECT_WAIT`].
async fn reconnect(
    coordinator: &mut watch::Receiver<CoordinatorView>,
    request: &LoopRequest,
    followed: &mut Followed,
    why: &str,
) -> Result<Events, String> {
    say(&format!("ratchet: lost the loop's progress stream ({why}); reconnecting"));
    let deadline = tokio::time::Instant::now() + RECONNECT_WAIT;
    let mut last_error = why.to_string();
    loop {
        let view = coordinator.borrow_and_update().clone();
        if let Some(url) = &view.url {
            let attempt = if view.incarnation == followed.incarnation {
                match &followed.task {
                    Some(task) => {
                        let params = json!({"id": task});
                        open(url, followed, "tasks/resubscribe", params, followed.last_event).await
                    }
                    None => open_loop(url, followed, request, Ask::Again).await,
                }
            } else {
                // A new coordinator process: its loop resumed the run by itself; attach to it.
                let ask = followed.run_id.as_deref().map_or(Ask::Again, Ask::Attach);
                open_loop(url, followed, request, ask).await
            };
            match attempt {
                Ok(stream) => {
                    if view.incarnation != followed.incarnation {
                        followed.incarnation = view.incarnation;
                        followed.task = None;
                        followed.last_event = None;
                        say(&format!("ratchet: following the loop on the restarted coordinator at {url}"));
                    }
                    return Ok(stream);
                }
                Err(ClientError::Rpc(e, _)) => {
                    // The coordinator answered and refused: waiting will not change its mind.
                    return Err(format!("the coordinator refused to resume following the loop: {}", e.message));
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(format!(
                "lost the coordinator and could not follow the loop again within {}s (last error: {last_error}); the loop itself may still run: see `ratchet status` and worktrees/.swarm/logs/coordinator.log",
                RECONNECT_WAIT.as_secs()
            ));
        }
        let pause = (now + RETRY_PAUSE).min(deadline);
        if let Ok(Err(_)) = tokio::time::timeout_at(pause, coordinator.changed()).await {
            // The supervisor is going away; the shutdown ends this task.
            tokio::time::sleep_until(pause).await;
        }
    }
}
