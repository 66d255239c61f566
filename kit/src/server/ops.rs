//! The A2A operations on the agent's task model, whichever binding and version asked: start or
//! continue a task, wait for it, read, list and cancel tasks, push notification configs.
//! Errors are [`Fault`]s, rendered by the binding.
//!
//! Task semantics (A2A 1.0 §3, 0.3 §7):
//! - a message that names a skill (a `skill` member in its data part or metadata, or text that
//!   is exactly a skill's id) starts a task running it; `status` answers at once; an unknown
//!   skill is rejected, naming the skills there are;
//! - a message that names none gets the task `input-required`, asking which skill to run (the
//!   agent's intake); a follow-up message on the task (its `taskId`) that names one runs it;
//! - a skill may ask for more input itself ([`super::TaskCtx::ask`]);
//! - a follow-up message goes to a task that waits for input; to a terminal task it is refused
//!   with `UnsupportedOperationError` (§3.1.1), to a working one too (it asked for nothing);
//! - a send returns the task at once unless it blocks (0.3: `blocking: true`; 1.0: unless
//!   `returnImmediately`, §3.2.2), then when the task is terminal or interrupted;
//! - cancel works on any task that is not terminal (`TaskNotCancelableError` otherwise).

use std::sync::Arc;

use protocol::jsonrpc::{ErrorCode, Fault};
use protocol::{Message, MessageSendParams, PushNotificationConfig, Role, Task, TaskState};
use serde_json::{Map, Value};

use super::{STATUS_SKILL, Server, TaskCtx, TaskEnd, agent_text, new_id};
use crate::store::{Entry, FollowUp, ListFilter, ListPage, PushTarget, Refused, StoreError};

pub(crate) fn internal(e: StoreError) -> Fault {
    match e {
        StoreError::BadCursor(_) => ErrorCode::InvalidParams.fault(e.to_string()),
        other => ErrorCode::InternalError.fault(other.to_string()),
    }
}

pub(crate) fn not_found(id: &str) -> Fault {
    ErrorCode::TaskNotFound
        .fault(format!(
            "task {id:?} not found; use an id a send returned (finished tasks are kept a while, then forgotten)"
        ))
        .meta("taskId", id)
}

pub(crate) async fn lookup(s: &Server, id: &str) -> Result<Arc<Entry>, Fault> {
    s.store.get(id).await.map_err(|e| match e {
        StoreError::NotFound(_) => not_found(id),
        other => internal(other),
    })
}

pub(crate) fn check_history_length(n: Option<i64>) -> Result<(), Fault> {
    match n {
        Some(n) if n < 0 => {
            Err(ErrorCode::InvalidParams.fault(format!("historyLength {n} is negative; use 0 (no history) or more")))
        }
        _ => Ok(()),
    }
}

/// At most the `n` most recent messages of the history (§3.2.4; 0: none).
pub(crate) fn trim_history(mut task: Task, n: Option<i64>) -> Task {
    if let Some(n) = n {
        let n = n.max(0) as usize;
        let len = task.history.len();
        if n < len {
            task.history.drain(..len - n);
        }
    }
    task
}

/// The skill a message names: `skill` in its data part or metadata, else its text when that is
/// exactly the id of a skill this agent has (so a person can type `status`).
fn named_skill(s: &Server, m: &Message) -> Option<String> {
    let from_data = m.data().and_then(|d| d.get("skill")).and_then(Value::as_str);
    let from_meta = m.metadata.as_ref().and_then(|d| d.get("skill")).and_then(Value::as_str);
    if let Some(name) = from_data.or(from_meta) {
        return Some(name.to_string());
    }
    let text = m.text();
    let text = text.trim();
    (text == STATUS_SKILL || s.spec.skills.iter().any(|k| k.card.id == text)).then(|| text.to_string())
}

fn skill_list(s: &Server) -> String {
    let mut ids = vec![STATUS_SKILL.to_string()];
    ids.extend(s.spec.skills.iter().map(|k| k.card.id.clone()));
    ids.join(", ")
}

/// What a send did.
pub(crate) enum Sent {
    /// A task started, or continued: for a follow-up, `resumed` holds the task as it was when the
    /// follow-up was taken and the index of the first event after that point (a stream of it
    /// starts with this snapshot); None for a new task (its events from 0).
    Task { entry: Arc<Entry>, resumed: Option<(Task, usize)> },
    /// A skill answered directly, with a message and no task ([`super::Skill::with_reply`]).
    Reply(Message),
}

/// `message/send`, `message/stream`, `SendMessage`, `SendStreamingMessage`: start a task, or
/// continue the one the message names, or let the skill answer directly.
pub(crate) async fn send(s: &Arc<Server>, p: MessageSendParams, v1: bool) -> Result<Sent, Fault> {
    let MessageSendParams { message: msg, configuration, .. } = p;
    let cfg = configuration.unwrap_or_default();
    check_history_length(cfg.history_length)?;
    if msg.parts.is_empty() {
        return Err(ErrorCode::InvalidParams.fault("message.parts is empty; send at least one text or data part"));
    }
    if msg.role != Role::User {
        return Err(ErrorCode::InvalidParams.fault("message.role must be the user's for a request"));
    }
    if let Some(task_id) = msg.task_id.clone() {
        return continue_task(s, msg, &task_id).await;
    }
    let skill = named_skill(s, &msg).or_else(|| s.spec.default_skill.clone());
    if let Some(reply) = skill.as_deref().and_then(|name| direct_reply(s, name, &msg)) {
        return Ok(Sent::Reply(reply));
    }
    let id = new_id();
    let context_id = msg.context_id.clone().unwrap_or_else(new_id);
    // A skill that ends at once (`status`, an unknown one) is recorded with its end, in one
    // append; a skill of the agent gets its own copy of the message.
    let (entry, run) = match skill.as_deref().map(|name| (name, immediate_end(s, name))) {
        Some((_, Some(end))) => {
            let (state, message) = end_status(end);
            (s.store.create_ended(&id, &context_id, msg, state, message).map_err(internal)?, None)
        }
        Some((name, None)) => (s.store.create(&id, &context_id, msg.clone()).map_err(internal)?, Some((name, msg))),
        None => (s.store.create(&id, &context_id, msg).map_err(internal)?, None),
    };
    if let Some(mut config) = cfg.push_notification_config
        && s.spec.push_notifications
    {
        config.id.get_or_insert_with(|| id.clone());
        add_push(s, &entry, PushTarget { config, v1 }, 0)?;
    }
    match (run, &skill) {
        (Some((name, msg)), _) => run_named(s, &entry, name, msg),
        (None, None) => intake(s, &entry, None),
        (None, Some(_)) => {}
    }
    Ok(Sent::Task { entry, resumed: None })
}

/// Skill `name`'s direct answer to `msg`, if it gives one: an agent message in the request's
/// context (a new context when the request names none), about no task.
fn direct_reply(s: &Server, name: &str, msg: &Message) -> Option<Message> {
    let skill = s.spec.skills.iter().find(|k| k.card.id == name)?;
    let mut reply = (skill.reply.as_ref()?)(msg)?;
    reply.role = Role::Agent;
    reply.task_id = None;
    reply.context_id = Some(msg.context_id.clone().unwrap_or_else(new_id));
    Some(reply)
}

/// A follow-up message on task `task_id` (§3.4.2: the task must exist; §3.4.3: a `contextId`
/// that is not the task's is refused).
async fn continue_task(s: &Arc<Server>, msg: Message, task_id: &str) -> Result<Sent, Fault> {
    let entry = lookup(s, task_id).await?;
    let (task, _) = entry.snapshot();
    if let Some(ctx) = &msg.context_id
        && ctx != &task.context_id
    {
        return Err(ErrorCode::InvalidParams
            .fault(format!(
                "message.contextId {ctx:?} is not the context of task {task_id:?} ({:?}); omit contextId on a follow-up, or send the task's",
                task.context_id
            ))
            .meta("taskId", task_id));
    }
    let follow = entry.follow_up(msg).map_err(internal)?;
    let refused = |why: String| Err(ErrorCode::UnsupportedOperation.fault(why).meta("taskId", task_id));
    let resumed = entry.snapshot();
    match follow {
        Err(Refused::Terminal(state)) => {
            return refused(format!(
                "task {task_id:?} is {} and takes no more messages (a terminal task is final); send without taskId to start a new task",
                state_name(state)
            ));
        }
        Err(Refused::NotWaiting(state)) => {
            return refused(format!(
                "task {task_id:?} is {} and not waiting for input; send a follow-up when it asks (input-required), or cancel it",
                state_name(state)
            ));
        }
        Err(Refused::TooManyTurns) => {
            return refused(format!(
                "task {task_id:?} took {} follow-up messages, the most one task takes; start a new task",
                crate::store::MAX_TURNS
            ));
        }
        Ok(FollowUp::Delivered) => {}
        Ok(FollowUp::Intake(m)) => match named_skill(s, &m) {
            Some(name) if name == STATUS_SKILL || s.spec.skills.iter().any(|k| k.card.id == name) => {
                run_named(s, &entry, &name, m)
            }
            Some(name) => intake(s, &entry, Some(&name)),
            None => intake(s, &entry, None),
        },
    }
    Ok(Sent::Task { entry, resumed: Some(resumed) })
}

fn state_name(state: TaskState) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// The agent's intake: the task waits (`input-required`) for the client to say which skill.
fn intake(s: &Server, entry: &Entry, unknown: Option<&str>) {
    let (task, _) = entry.snapshot();
    let head = match unknown {
        Some(name) => format!("{} has no skill {name:?}.", s.spec.name),
        None => format!("{} ({}) runs a skill for each task.", s.spec.name, s.spec.role),
    };
    let question = format!(
        "{head} Which one? Skills: {}. Reply on this task (taskId {}) with the skill's id as text, or a data part \
         {{\"skill\": \"<id>\", ...its input}}; `status` reports this agent's state.",
        skill_list(s),
        task.id
    );
    if let Err(e) = entry.ask_intake(agent_text(&question)) {
        tracing::warn!("task {}: {e}", task.id);
    }
}

/// Run skill `name` on the task: `status` answers at once (no thread, no wait), a skill of the
/// agent runs on its own tokio task, an unknown one is rejected naming the skills there are.
fn run_named(s: &Arc<Server>, entry: &Arc<Entry>, name: &str, msg: Message) {
    if let Some(end) = immediate_end(s, name) {
        return finish(entry, end);
    }
    let Some(skill) = s.spec.skills.iter().find(|k| k.card.id == name).cloned() else { return };
    let (server, entry) = (s.clone(), entry.clone());
    let name = name.to_string();
    // Decoupled from the connection: the skill runs to its end whatever the client does.
    tokio::spawn(async move {
        let (task_id, context_id) = entry.with_task(|t| (t.id.clone(), t.context_id.clone()));
        if let Err(e) = entry.status(TaskState::Working, None, false) {
            tracing::warn!("task {task_id}: {e}");
        }
        let ctx = TaskCtx {
            task_id,
            context_id,
            skill: name.clone(),
            message: msg,
            server: server.clone(),
            entry: entry.clone(),
            cancel: entry.cancel_signal(),
        };
        let run = (skill.run)(ctx);
        // A panicking skill must not take the agent down or leave the task hanging.
        let end = match tokio::spawn(run).await {
            Ok(end) => end,
            Err(e) => TaskEnd::Failed(format!("skill {name:?} crashed: {e}")),
        };
        finish(&entry, end);
    });
}

/// How skill `name` ends when it ends at once: `status` answers, an unknown skill is rejected
/// naming the skills there are. None for a skill of the agent (it runs on its own task).
fn immediate_end(s: &Server, name: &str) -> Option<TaskEnd> {
    if s.spec.skills.iter().any(|k| k.card.id == name) {
        return None;
    }
    Some(if name == STATUS_SKILL {
        // `{name} ({role}) is up` and {"name", "role", "skills", "uptime_ms"}, built in place
        // (`format!` and `json!`, which serializes the skills' list into a `Value`, cost twice as
        // much, see BENCHMARKS.md).
        let (agent, role) = (&s.spec.name, &s.spec.role);
        let mut text = String::with_capacity(agent.len() + role.len() + 9);
        for piece in [agent.as_str(), " (", role, ") is up"] {
            text.push_str(piece);
        }
        let mut data = Map::new();
        data.insert("name".into(), Value::String(agent.clone()));
        data.insert("role".into(), Value::String(role.clone()));
        data.insert("uptime_ms".into(), Value::from(s.started.elapsed().as_millis() as u64));
        data.insert(
            "skills".into(),
            Value::Array(s.spec.skills.iter().map(|k| Value::String(k.card.id.clone())).collect()),
        );
        TaskEnd::Completed { text, data: Some(Value::Object(data)) }
    } else {
        TaskEnd::Rejected(format!(
            "skill {name:?} is not available on agent {} (role {}); available: {}",
            s.spec.name,
            s.spec.role,
            skill_list(s)
        ))
    })
}

/// The final status of a skill's end. A completion with no text and no data carries no status
/// message (the result is in the artefacts).
fn end_status(end: TaskEnd) -> (TaskState, Option<Message>) {
    match end {
        TaskEnd::Completed { text, data: None } if text.is_empty() => (TaskState::Completed, None),
        TaskEnd::Completed { text, data } => {
            let mut parts = Vec::with_capacity(2);
            parts.push(protocol::Part::text(text));
            if let Some(d) = data {
                parts.push(protocol::Part::data(d));
            }
            (TaskState::Completed, Some(Message::new(Role::Agent, new_id(), parts)))
        }
        TaskEnd::Failed(t) => (TaskState::Failed, Some(agent_text(&t))),
        TaskEnd::Rejected(t) => (TaskState::Rejected, Some(agent_text(&t))),
    }
}

/// Record how a skill ended (nothing if the task is already over, e.g. canceled).
fn finish(entry: &Entry, end: TaskEnd) {
    let (state, message) = end_status(end);
    if let Err(e) = entry.status(state, message, true) {
        tracing::error!("task {}: {e}", entry.id());
    }
}

/// Wait until the task is terminal or interrupted (a blocking send, §3.2.2).
pub(crate) async fn settle(entry: &Entry) {
    let mut rx = entry.subscribe();
    loop {
        if entry.task_state().is_interrupted() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// `tasks/cancel`, `CancelTask`.
pub(crate) async fn cancel(s: &Server, id: &str) -> Result<Task, Fault> {
    let entry = lookup(s, id).await?;
    let changed = entry.status(TaskState::Canceled, Some(agent_text("canceled at the client's request")), true);
    if !changed.map_err(internal)? {
        let state = entry.task_state();
        return Err(ErrorCode::TaskNotCancelable
            .fault(format!("task {id:?} is already {} and cannot be canceled", state_name(state)))
            .meta("taskId", id));
    }
    Ok(entry.task())
}

/// `ListTasks` (1.0 only).
pub(crate) async fn list(s: &Server, filter: &ListFilter) -> Result<ListPage, Fault> {
    s.store.list(filter).await.map_err(internal)
}

pub(crate) fn push_unsupported() -> Fault {
    ErrorCode::PushNotificationNotSupported
        .fault("this agent does not support push notifications (see capabilities.pushNotifications in its card)")
}

fn check_push_url(url: &str) -> Result<(), Fault> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(ErrorCode::InvalidParams.fault(format!("push notification url {url:?} must be an http(s) URL")))
    }
}

/// Add a push config to a task; the first one starts the task's notification forwarder from
/// event `from` on.
fn add_push(s: &Arc<Server>, entry: &Arc<Entry>, target: PushTarget, from: usize) -> Result<(), Fault> {
    check_push_url(&target.config.url)?;
    if entry.set_push(target) {
        super::push::forward(s.clone(), entry.clone(), from);
    }
    Ok(())
}

/// `tasks/pushNotificationConfig/set`, `CreateTaskPushNotificationConfig`: the config as stored
/// (with its id: the task's when none was given).
pub(crate) async fn set_push(
    s: &Arc<Server>,
    task_id: &str,
    mut config: PushNotificationConfig,
    v1: bool,
) -> Result<PushNotificationConfig, Fault> {
    if !s.spec.push_notifications {
        return Err(push_unsupported());
    }
    let entry = lookup(s, task_id).await?;
    if config.id.is_none() {
        config.id = Some(task_id.to_string());
    }
    let (_, from) = entry.snapshot();
    add_push(s, &entry, PushTarget { config: config.clone(), v1 }, from)?;
    Ok(config)
}

/// `tasks/pushNotificationConfig/get`, `GetTaskPushNotificationConfig`: the config with that
/// id, or (0.3, no id given) the task's first one.
pub(crate) async fn get_push(
    s: &Server,
    task_id: &str,
    config_id: Option<&str>,
) -> Result<PushNotificationConfig, Fault> {
    if !s.spec.push_notifications {
        return Err(push_unsupported());
    }
    let entry = lookup(s, task_id).await?;
    let configs = entry.push_configs();
    let found = match config_id {
        Some(id) => configs.into_iter().find(|c| c.config.id.as_deref() == Some(id)),
        None => configs.into_iter().next(),
    };
    // §3.1.8: a config that does not exist is a TaskNotFoundError.
    found.map(|t| t.config).ok_or_else(|| {
        ErrorCode::TaskNotFound
            .fault(format!(
                "task {task_id:?} has no push notification config{}; create one first",
                config_id.map(|c| format!(" {c:?}")).unwrap_or_default()
            ))
            .meta("taskId", task_id)
    })
}

pub(crate) async fn list_push(s: &Server, task_id: &str) -> Result<Vec<PushNotificationConfig>, Fault> {
    if !s.spec.push_notifications {
        return Err(push_unsupported());
    }
    let entry = lookup(s, task_id).await?;
    Ok(entry.push_configs().into_iter().map(|t| t.config).collect())
}

/// Idempotent (§3.1.10: "multiple deletions of the same config have the same effect").
pub(crate) async fn delete_push(s: &Server, task_id: &str, config_id: &str) -> Result<(), Fault> {
    if !s.spec.push_notifications {
        return Err(push_unsupported());
    }
    let entry = lookup(s, task_id).await?;
    entry.delete_push(config_id);
    Ok(())
}

/// `GetExtendedAgentCard`: this agent declares no extended card (§3.3.4: then
/// `UnsupportedOperationError`).
pub(crate) fn extended_card() -> Fault {
    ErrorCode::UnsupportedOperation
        .fault("this agent has no extended Agent Card (capabilities.extendedAgentCard is not declared); its public card is all there is")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `status` answer, built in place, is what `format!` and `json!` made of it.
    #[test]
    fn the_status_answer_is_the_agent_s_name_role_skills_and_uptime() {
        let dir = tempfile::tempdir().expect("temp dir");
        let skill = |id: &str| crate::server::Skill::new(id, id, "", |_| async { TaskEnd::Failed(String::new()) });
        let spec = crate::server::AgentSpec {
            name: "crit\"ic".into(),
            role: "critic".into(),
            skills: vec![skill("critique"), skill("review")],
            ..Default::default()
        };
        let s = Server::new(spec, dir.path().to_path_buf(), "http://127.0.0.1:1/".into(), None, 4096).expect("server");
        let Some(TaskEnd::Completed { text, data: Some(data) }) = immediate_end(&s, STATUS_SKILL) else {
            panic!("status completes with a text and data")
        };
        assert_eq!(text, format!("{} ({}) is up", s.spec.name, s.spec.role));
        let uptime = data["uptime_ms"].as_u64().expect("uptime_ms is a number");
        let expected = serde_json::json!({
            "name": s.spec.name,
            "role": s.spec.role,
            "uptime_ms": uptime,
            "skills": ["critique", "review"],
        });
        assert_eq!(serde_json::to_string(&data).unwrap(), serde_json::to_string(&expected).unwrap());
    }
}
