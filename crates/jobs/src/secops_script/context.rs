//! Job context properties (`ContextType` 3) answered from the job's own state, by the run's
//! task: the SDK's `timestamp` is a job timestamp under `<Identifier>/timestamp` (so `list`
//! shows it), other keys the job's context under `<Identifier>/<PropertyKey>`. Each
//! `Identifier` has its own values, as on the platform.

use serde_json::Value;

use soarjobd_core::{JobContext, JobError};

use super::gateway::{ContextOp, OpKind};

/// The SecOps SDK's context key of `fetch_timestamp` / `save_timestamp`; kept as a job
/// timestamp (`<Identifier>/timestamp`), so `list` shows it.
const TIMESTAMP_KEY: &str = soarjobd_core::DEFAULT_TIMESTAMP_KEY;

/// The store's timestamp key of an SDK timestamp saved under `identifier`.
pub(crate) fn timestamp_key(identifier: &str) -> String {
    format!("{identifier}/{TIMESTAMP_KEY}")
}

/// An integer timestamp as the SDK saves it: a JSON number or a JSON string of digits.
pub(super) fn as_millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Answers a job context property request from the job's state.
pub(super) async fn serve_op(ctx: &JobContext, op: ContextOp) {
    let answer = context_answer(ctx, &op).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "SecOps SDK gateway: a context property request failed");
        (500, serde_json::to_vec(&e.to_string()).unwrap_or_default())
    });
    let _ = op.reply.send(answer);
}

/// The job's context key of a SecOps job context property: `<Identifier>/<PropertyKey>` (the
/// job's own state is already per job). The SDK's timestamp is the job's last-success
/// timestamp instead.
pub(super) fn context_key(op: &ContextOp) -> String {
    format!("{}/{}", op.identifier, op.key)
}

pub(super) async fn context_answer(
    ctx: &JobContext,
    op: &ContextOp,
) -> Result<(u16, Vec<u8>), JobError> {
    let enc = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    let current = async {
        if op.key == TIMESTAMP_KEY {
            // Before timestamps were kept per identifier they were kept under the bare key:
            // read there when this identifier has none yet.
            let ms = match ctx.stored_timestamp(&timestamp_key(&op.identifier)).await? {
                Some(ms) => Some(ms),
                None => ctx.stored_timestamp(TIMESTAMP_KEY).await?,
            };
            if let Some(ms) = ms {
                // As the SDK saved it: `json.dumps(ms)`, a string of digits.
                return Ok::<_, JobError>(Some(Value::String(ms.to_string())));
            }
        }
        ctx.context_get(&context_key(op)).await
    };
    let set = |value: Value| async move {
        match as_millis(&value).filter(|_| op.key == TIMESTAMP_KEY) {
            Some(ms) => {
                let at = chrono::DateTime::from_timestamp_millis(ms)
                    .ok_or_else(|| JobError::msg(format!("timestamp {ms} is out of range")))?;
                ctx.save_timestamp_by_key(&timestamp_key(&op.identifier), at)
                    .await
            }
            None => ctx.context_set(&context_key(op), &value).await,
        }
    };
    match op.kind {
        OpKind::Get => Ok(match current.await? {
            Some(v) => (200, enc(&v)),
            None => (204, Vec::new()),
        }),
        OpKind::Set => {
            set(op.value.clone().unwrap_or(Value::Null)).await?;
            Ok((200, enc(&Value::Bool(true))))
        }
        OpKind::TrySet => {
            if current.await?.is_some() {
                return Ok((200, enc(&Value::Bool(false))));
            }
            set(op.value.clone().unwrap_or(Value::Null)).await?;
            Ok((200, enc(&Value::Bool(true))))
        }
    }
}
