//! The backup server's tools: argument handling around [`BackupStore`], with file work kept off the
//! async threads.

use std::sync::Arc;

use serde_json::{Value, json};

use super::BackupStore;
use super::name::NAME_PATTERN;
use crate::error::ToolFailure;
use crate::tool::{CallContext, Tool, ToolSpec, object_schema};

/// The backup server's tools, sharing one store.
pub fn tools(store: Arc<BackupStore>) -> Vec<Box<dyn Tool>> {
    vec![
        Box::new(CreateBackup(Arc::clone(&store))),
        Box::new(ListBackups(Arc::clone(&store))),
        Box::new(RestoreBackup(store)),
    ]
}

/// Runs blocking file work off the async threads.
async fn blocking<F>(work: F) -> Result<Value, ToolFailure>
where
    F: FnOnce() -> Result<Value, ToolFailure> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ToolFailure::new("internal", format!("backup task failed: {e}")))?
}

fn name_arg(args: &Value) -> String {
    args.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn name_schema() -> Value {
    json!({"type": "string", "pattern": NAME_PATTERN, "description": "The snapshot's name (file name without .json)."})
}

struct CreateBackup(Arc<BackupStore>);

#[tonic::async_trait]
impl Tool for CreateBackup {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "create_backup",
            description: "Writes `data` as a checksummed snapshot named `name`, atomically. Refuses to \
                replace an existing snapshot unless `overwrite` is true.",
            input_schema: object_schema(
                json!({
                    "name": name_schema(),
                    "data": {"description": "Any JSON value to keep."},
                    "overwrite": {"type": "boolean", "default": false}
                }),
                &["name", "data"],
            ),
        }
    }

    async fn call(&self, mut args: Value, _ctx: &CallContext) -> Result<Value, ToolFailure> {
        let store = Arc::clone(&self.0);
        let name = name_arg(&args);
        let overwrite = args
            .get("overwrite")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let data = args.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        blocking(move || store.create(&name, data, overwrite)).await
    }
}

struct ListBackups(Arc<BackupStore>);

#[tonic::async_trait]
impl Tool for ListBackups {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "list_backups",
            description: "Lists the snapshots: name, sha256, size in bytes and creation time.",
            input_schema: object_schema(json!({}), &[]),
        }
    }

    async fn call(&self, _args: Value, _ctx: &CallContext) -> Result<Value, ToolFailure> {
        let store = Arc::clone(&self.0);
        blocking(move || store.list()).await
    }
}

struct RestoreBackup(Arc<BackupStore>);

#[tonic::async_trait]
impl Tool for RestoreBackup {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "restore_backup",
            description: "Reads a snapshot back after re-checking its checksum; fails with not_found or \
                checksum_mismatch.",
            input_schema: object_schema(json!({"name": name_schema()}), &["name"]),
        }
    }

    async fn call(&self, args: Value, _ctx: &CallContext) -> Result<Value, ToolFailure> {
        let store = Arc::clone(&self.0);
        let name = name_arg(&args);
        blocking(move || store.restore(&name)).await
    }
}
