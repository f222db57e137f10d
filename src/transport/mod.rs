//! The transports: MCP over stdio (the default) and streamable HTTP. They
//! carry MCP sessions to `mcp::Service` and share one shutdown signal and
//! the idle memory purger; they hold no tool logic.

pub mod direct;
pub mod edge;
pub mod host;
pub mod http;
pub mod peek;
pub mod resume;
pub mod stdio;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
