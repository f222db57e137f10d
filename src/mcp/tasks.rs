//! The MCP side of durable tasks (`crate::tasks`): which tool calls become
//! tasks, and the `tasks/get` / `tasks/cancel` / `tasks/update` answers.
//!
//! A call becomes a task only when the request declared the
//! `io.modelcontextprotocol/tasks` extension (rmcp refuses a task result
//! otherwise), the tool is one of the image tools, its arguments parse,
//! and the mode says so: `always`, or `auto` for the calls likely to
//! outlast a client's timeout (2K or 4K, gemini-3-pro-image, n > 1). The
//! result a finished task returns is the result the same call would have
//! returned synchronously.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CreateTaskResult, DetailedTask,
    GetTaskResult, Task, TaskPayload, TaskStatus,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};

use super::{CallCtx, DirectCall, ImageServer, tool_error};
use crate::gemini::models;
use crate::store::tasks::{TaskId, TaskRecord, TaskState};
use crate::tasks::{Finished, TaskMode, rpc_error};

/// The largest arguments a task keeps while it waits for its turn: a
/// prompt of a few KiB. A call with more (a long prompt, a `data:` URI) is
/// served synchronously, where its body stays paid for until its inputs
/// are files; so a waiting task holds at most this and its future.
pub const MAX_TASK_ARGUMENT_BYTES: usize = 4 << 10;

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The wire task of a record.
fn task_of(rec: &TaskRecord, poll_ms: u64) -> Task {
    let status = match rec.state {
        TaskState::Working => TaskStatus::Working,
        TaskState::Completed => TaskStatus::Completed,
        TaskState::Failed => TaskStatus::Failed,
        TaskState::Cancelled => TaskStatus::Cancelled,
    };
    let mut t = Task::new(
        rec.task_id.clone(),
        status,
        rfc3339(rec.created_ms),
        rfc3339(rec.updated_ms.max(rec.heartbeat_ms)),
    )
    .with_ttl_ms(rec.ttl_ms)
    .with_poll_interval_ms(poll_ms);
    if let Some(m) = &rec.status_message {
        t = t.with_status_message(m.clone());
    }
    t
}

fn detailed(rec: TaskRecord, poll_ms: u64) -> DetailedTask {
    let task = task_of(&rec, poll_ms);
    let payload = match rec.state {
        TaskState::Working => TaskPayload::Working,
        TaskState::Cancelled => TaskPayload::Cancelled,
        TaskState::Completed => TaskPayload::Completed {
            result: rec.result.unwrap_or_default(),
        },
        TaskState::Failed => TaskPayload::Failed {
            error: rec
                .error
                .unwrap_or_else(|| rpc_error(-32603, "the task failed")),
        },
    };
    DetailedTask::new(task, payload)
}

fn unknown(id: &str) -> ErrorData {
    let shown: String = id.chars().take(64).collect();
    ErrorData::invalid_params(
        format!(
            "no task {shown:?} on this server (unknown, or past its time to live; task ids look like task_ and 32 hex digits)"
        ),
        Some(json!({ "taskId": shown })),
    )
}

fn store_error(e: crate::store::StoreError) -> ErrorData {
    tracing::warn!(error = %e, "task store");
    ErrorData::internal_error(format!("the task store failed: {e}"), None)
}

impl ImageServer {
    /// Whether this call should run as a task.
    fn wants_task(&self, call: &DirectCall) -> bool {
        let options = match call {
            DirectCall::Generate(a) => &a.options,
            DirectCall::Edit(a) => &a.more.options,
            DirectCall::Continue(a) => &a.more.options,
        };
        match self.app.tasks.settings().mode {
            TaskMode::Off => false,
            TaskMode::Always => true,
            TaskMode::Auto => {
                let big = options
                    .image_size
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("2K") || s.eq_ignore_ascii_case("4K"));
                let model = options
                    .model
                    .as_deref()
                    .unwrap_or_else(|| self.app.pipeline.model());
                let pro = models::info(model).family == models::Family::Pro3;
                big || pro || options.n.unwrap_or(1) > 1
            }
        }
    }

    /// The task this call becomes, or `None` to serve it as usual.
    pub(super) async fn call_as_task(
        &self,
        request: &CallToolRequestParams,
        ctx: &RequestContext<RoleServer>,
    ) -> Option<Result<CallToolResponse, ErrorData>> {
        if self.app.tasks.settings().mode == TaskMode::Off
            || !ctx
                .client_capabilities()
                .is_some_and(|c| c.supports_tasks())
        {
            return None;
        }
        let size = serde_json::to_vec(&request.arguments).map_or(usize::MAX, |v| v.len());
        if size > MAX_TASK_ARGUMENT_BYTES {
            tracing::debug!(
                size,
                "arguments too large to keep in a waiting task; served synchronously"
            );
            return None;
        }
        let call = DirectCall::parse(&request.name, request.arguments.clone())?;
        if !self.wants_task(&call) {
            return None;
        }
        let tool = call.tool();
        let server = self.clone();
        let principal = super::principal_of(ctx);
        let owner = principal.clone();
        let started = self
            .app
            .tasks
            .start(tool, super::owner_id(&principal), move |ct| async move {
                let ctx = CallCtx::task(ct, owner);
                let result = match call {
                    DirectCall::Generate(args) => server.generate(args, &ctx).await,
                    DirectCall::Edit(args) => server.edit(args, &ctx).await,
                    DirectCall::Continue(args) => server.continue_call(args, &ctx).await,
                };
                finished(result)
            })
            .await;
        let poll = self.app.tasks.settings().poll_interval.as_millis() as u64;
        Some(Ok(match started {
            Ok(rec) => {
                tracing::info!(task = %rec.task_id, tool, principal = %principal, "started a task");
                CallToolResponse::Task(CreateTaskResult::new(task_of(&rec, poll)))
            }
            Err(e) => {
                tracing::warn!(tool, principal = %principal, error = %e, "could not start a task");
                CallToolResponse::Complete(tool_error(e))
            }
        }))
    }

    /// The task's record if `viewer` may see it; anything else looks
    /// like an unknown id.
    async fn visible_task(
        &self,
        id: &str,
        viewer: Option<&str>,
    ) -> Result<(TaskId, TaskRecord), ErrorData> {
        let tid = TaskId::parse(id).ok_or_else(|| unknown(id))?;
        let rec = self
            .app
            .tasks
            .get(&tid)
            .await
            .map_err(store_error)?
            .filter(|r| self.may_see(viewer, r.principal.as_deref(), "task", id))
            .ok_or_else(|| unknown(id))?;
        Ok((tid, rec))
    }

    pub(super) async fn get_task_result(
        &self,
        id: &str,
        viewer: Option<&str>,
    ) -> Result<GetTaskResult, ErrorData> {
        let (_, rec) = self.visible_task(id, viewer).await?;
        let poll = self.app.tasks.settings().poll_interval.as_millis() as u64;
        Ok(GetTaskResult::new(detailed(rec, poll)))
    }

    pub(super) async fn cancel(&self, id: &str, viewer: Option<&str>) -> Result<(), ErrorData> {
        let (tid, _) = self.visible_task(id, viewer).await?;
        self.app
            .tasks
            .cancel(&tid)
            .await
            .map_err(store_error)?
            .ok_or_else(|| unknown(id))?;
        Ok(())
    }

    pub(super) async fn update(&self, id: &str, viewer: Option<&str>) -> Result<(), ErrorData> {
        self.visible_task(id, viewer).await?;
        Err(ErrorData::invalid_params(
            "this server's tasks never ask for input; there is nothing to update",
            Some(json!({ "taskId": id })),
        ))
    }
}

/// A tool's result as the task's `result`.
fn finished(result: CallToolResult) -> Finished {
    match serde_json::to_value(&result) {
        Ok(Value::Object(m)) => Finished::Result(m),
        Ok(_) | Err(_) => Finished::Error(rpc_error(-32603, "the result could not be kept")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn rec(state: TaskState) -> TaskRecord {
        TaskRecord {
            version: 1,
            task_id: TaskId::new().to_string(),
            rev: 3,
            tool: "generate_image".into(),
            state,
            owner: "a".into(),
            created_ms: 1_764_547_200_000,
            updated_ms: 1_764_547_201_000,
            heartbeat_ms: 1_764_547_205_000,
            ttl_ms: 3_600_000,
            cancel_requested: false,
            status_message: Some("generating".into()),
            result: Some(Map::from_iter([("isError".into(), Value::Bool(false))])),
            error: None,
            principal: None,
        }
    }

    #[test]
    fn records_become_the_spec_shapes() {
        let working = serde_json::to_value(CreateTaskResult::new(task_of(
            &rec(TaskState::Working),
            2000,
        )))
        .unwrap();
        assert_eq!(working["resultType"], "task");
        assert_eq!(working["status"], "working");
        assert_eq!(working["createdAt"], "2025-12-01T00:00:00.000Z");
        assert_eq!(working["lastUpdatedAt"], "2025-12-01T00:00:05.000Z");
        assert_eq!(working["ttlMs"], 3_600_000);
        assert_eq!(working["pollIntervalMs"], 2000);
        let done = serde_json::to_value(GetTaskResult::new(detailed(
            rec(TaskState::Completed),
            2000,
        )))
        .unwrap();
        assert_eq!(done["status"], "completed");
        assert_eq!(done["result"]["isError"], false);
        let mut f = rec(TaskState::Failed);
        f.error = Some(rpc_error(-32603, "gone"));
        let failed = serde_json::to_value(GetTaskResult::new(detailed(f, 2000))).unwrap();
        assert_eq!(failed["error"]["code"], -32603);
        assert!(failed.get("result").is_none());
    }
}
