//! MCP over stdin/stdout. stdout belongs to the protocol; nothing else
//! writes it. rmcp reads lines through a feeder that answers a line that
//! is not JSON with JSON-RPC's -32700 (`id: null`), as the spec asks,
//! where rmcp alone would ignore it.

use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};

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
    let task_beat = app.tasks.spawn_background();
    let (stdin, stdout) = rmcp::transport::stdio();
    // rmcp reads from and writes to pipes of ours: the feeder answers
    // lines that are not JSON, the writer puts those answers between
    // rmcp's lines.
    let (rmcp_in, feed) = tokio::io::duplex(PIPE_BYTES);
    let (rmcp_out, drain) = tokio::io::duplex(PIPE_BYTES);
    let (errors, errors_rx) = tokio::sync::mpsc::channel(1);
    let feeder = tokio::spawn(feed_lines(stdin, feed, errors));
    let writer = tokio::spawn(write_out(drain, stdout, errors_rx));
    let transport =
        AsyncRwTransport::new_server(rmcp_in, rmcp_out).with_max_line_length(max_line_bytes);
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
    // Tasks cannot outlive the process: record them as failed.
    app.tasks.shutdown(Duration::from_secs(5)).await;
    task_beat.abort();
    purger.abort();
    feeder.abort();
    // What rmcp wrote last (results of calls that finished) still goes out.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    Ok(())
}

/// Each pipe holds at most this much between stdin, rmcp and stdout.
const PIPE_BYTES: usize = 64 << 10;
/// Lines up to this size are checked as JSON before rmcp gets them; a
/// longer one is passed on as it arrives, unchecked (rmcp's line cap
/// applies to it), so no line is ever held whole here.
const CHECKED_LINE_BYTES: usize = 64 << 10;
/// At most one parse-error reply a second: a peer that answers errors
/// with errors cannot start a storm.
const PARSE_REPLY_EVERY: Duration = Duration::from_secs(1);
const PARSE_ERROR: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error: the line is not JSON\"}}\n";

/// A complete line that is not JSON at all (JSON-RPC's -32700). Blank
/// lines are not errors; JSON that is not a valid message is rmcp's to
/// judge.
fn is_parse_error(line: &[u8]) -> bool {
    let t = line.trim_ascii();
    !t.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(t).is_err()
}

/// Copy stdin to rmcp line by line, keeping back lines that are not JSON
/// and signalling them to the writer instead. EOF on stdin is passed on.
async fn feed_lines(
    stdin: impl AsyncRead + Unpin,
    mut to_rmcp: impl AsyncWrite + Unpin,
    errors: tokio::sync::mpsc::Sender<()>,
) {
    let mut r = BufReader::with_capacity(PIPE_BYTES, stdin);
    let mut line = Vec::new();
    let mut passthrough = false;
    loop {
        let buf = match r.fill_buf().await {
            Ok(b) if !b.is_empty() => b,
            _ => break,
        };
        let (chunk, ends_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let n = chunk.len();
        let sent = if passthrough {
            passthrough = !ends_line;
            to_rmcp.write_all(chunk).await
        } else {
            line.extend_from_slice(chunk);
            if ends_line {
                let r = if is_parse_error(&line) {
                    let _ = errors.try_send(());
                    Ok(())
                } else {
                    to_rmcp.write_all(&line).await
                };
                line.clear();
                r
            } else if line.len() > CHECKED_LINE_BYTES {
                passthrough = true;
                let r = to_rmcp.write_all(&line).await;
                line = Vec::new();
                r
            } else {
                Ok(())
            }
        };
        if sent.is_err() {
            return;
        }
        r.consume(n);
    }
    // A last line without its newline is rmcp's to judge.
    let _ = to_rmcp.write_all(&line).await;
    let _ = to_rmcp.shutdown().await;
}

/// Copy rmcp's output to stdout, and put a parse-error reply between two
/// of its lines when the feeder signals one (at most one a second; more
/// in that second get none).
async fn write_out(
    mut from_rmcp: impl AsyncRead + Unpin,
    mut stdout: impl AsyncWrite + Unpin,
    mut errors: tokio::sync::mpsc::Receiver<()>,
) {
    let mut buf = vec![0u8; 16 << 10];
    let mut at_line_start = true;
    let mut pending = false;
    let mut errors_open = true;
    let mut last_reply: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = from_rmcp.read(&mut buf) => match r {
                Ok(n) if n > 0 => {
                    if stdout.write_all(&buf[..n]).await.is_err() || stdout.flush().await.is_err() {
                        return;
                    }
                    at_line_start = buf[n - 1] == b'\n';
                }
                _ => return,
            },
            e = errors.recv(), if errors_open => match e {
                Some(()) => {
                    let allowed = last_reply.is_none_or(|t| t.elapsed() >= PARSE_REPLY_EVERY);
                    pending = pending || allowed;
                }
                None => errors_open = false,
            },
        }
        if pending && at_line_start {
            pending = false;
            last_reply = Some(tokio::time::Instant::now());
            if stdout.write_all(PARSE_ERROR).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    }
}
