//! `nano-banana-fake-gemini`: the built-in fake of Google's Gemini image
//! API as a program of its own, for `nano-banana-mcp demo`, benchmarks and
//! the test scripts. It is a separate binary so that the server binary (and
//! the container image, which ships only the server) carries none of it.

#![deny(clippy::dbg_macro)]

use std::process::ExitCode;

use nano_banana_mcp::testkit::fake_gemini::{self, FakeConfig};

#[derive(Debug, clap::Parser)]
#[command(
    name = "nano-banana-fake-gemini",
    version,
    about = "A fake of Google's Gemini image API on a local port (for demos, benchmarks and tests; never a real model)."
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787", env = "FAKE_GEMINI_ADDR")]
    addr: std::net::SocketAddr,
    /// Delay before the first response byte, in milliseconds.
    #[arg(long, default_value_t = 0, env = "FAKE_GEMINI_LATENCY_MS")]
    latency_ms: u64,
    /// Only this API key is accepted (others get API_KEY_INVALID).
    #[arg(long, env = "FAKE_GEMINI_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let command = Args::command().after_help(format!(
        "Prompt directives (fake:NAME[=VALUE] anywhere in the prompt):\n  {}",
        fake_gemini::DIRECTIVES
    ));
    let args = match Args::from_arg_matches(&command.get_matches()) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cfg = FakeConfig {
        api_key: args.api_key.filter(|k| !k.is_empty()),
        latency: std::time::Duration::from_millis(args.latency_ms),
        ..FakeConfig::default()
    };
    match fake_gemini::serve_forever(args.addr, cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
