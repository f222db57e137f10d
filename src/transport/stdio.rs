//! MCP over stdin/stdout. stdout belongs to the protocol; nothing else
//! writes it.

use rmcp::ServiceExt as _;
use rmcp::transport::async_rw::AsyncRwTransport;

use crate::app::StartError;
use crate::mcp::Service;

/// Serve one MCP session on stdin/stdout until the client goes away.
///
/// Two ways to end, as the MCP stdio transport describes them:
/// - stdin closes (the client is done, or gone): rmcp stops reading, lets
///   the calls in flight finish, sends their results if stdout is still
///   open, and returns; their images are stored, not thrown away.
/// - SIGTERM or SIGINT (the client's next step, or a supervisor): the calls
///   in flight are dropped at once, which aborts their uploads (the local
///   temp file is deleted, Azure blocks stay uncommitted) and closes their
///   Gemini responses; nothing half-written is left behind.
pub async fn serve(service: Service, max_line_bytes: usize) -> Result<(), StartError> {
    let app = service.app().clone();
    let purger = app.spawn_idle_purger();
    let (stdin, stdout) = rmcp::transport::stdio();
    let transport =
        AsyncRwTransport::new_server(stdin, stdout).with_max_line_length(max_line_bytes);
    let calls = app.calls().clone();
    let service = service
        .session()
        .serve(transport)
        .await
        .map_err(|e| StartError::Transport(format!("MCP session failed to start: {e}")))?;
    tokio::select! {
        reason = service.waiting() => {
            tracing::info!(?reason, "stdio session ended");
        }
        () = super::shutdown_signal() => {
            // Dropping the service drops every request future in flight.
            tracing::info!(
                in_flight = calls.stats().in_flight,
                "signal received; cancelling calls in flight and exiting"
            );
        }
    }
    purger.abort();
    Ok(())
}
