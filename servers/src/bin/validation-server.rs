//! `validation-server`: runs the validation tool server until SIGINT or SIGTERM.

use conductor_servers::{ServerKind, daemon};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    daemon::main(ServerKind::Validation).await
}
