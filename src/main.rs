//! Wiring only: parse the command line, set up logging (stderr), build the
//! app, and hand it to the transport or command that was asked for.

#![deny(clippy::dbg_macro)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::parser::ValueSource;
use nano_banana_mcp::app::{App, StartError, Transport};
use nano_banana_mcp::config::{Cli, Command, Config, ServeArgs};
use nano_banana_mcp::mcp::Service;
use nano_banana_mcp::{memory, transport};

#[global_allocator]
static GLOBAL: memory::alloc::Allocator = memory::alloc::ALLOCATOR;

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if cfg.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// How a run ends, and the exit code it gives.
enum Failure {
    /// Bad configuration or arguments: exit 2, like clap's own errors.
    Usage(String),
    /// Could not start or could not finish: exit 1.
    Run(String),
    /// The output already said what is wrong (doctor's checklist): exit 1.
    Reported,
}

impl From<StartError> for Failure {
    fn from(e: StartError) -> Self {
        Failure::Run(e.to_string())
    }
}

async fn serve_command(cfg: &Config, args: &ServeArgs) -> Result<(), Failure> {
    let sessions = cfg.session_settings();
    match args.http {
        Some(addr) => {
            let http = args.http_config(addr).map_err(Failure::Usage)?;
            let mut settings =
                cfg.app_settings(Transport::Http, http.admin_token.is_some(), args.stateless);
            settings.direct_calls = http.direct_calls;
            settings.per_connection = transport::edge::PER_CONNECTION;
            let app = App::build(settings).await?;
            transport::http::serve(Service::new(Arc::new(app), sessions), http).await?;
        }
        None => {
            let app = App::build(cfg.app_settings(Transport::Stdio, true, false)).await?;
            transport::stdio::serve(
                Service::new(Arc::new(app), sessions),
                cfg.max_line_bytes as usize,
            )
            .await?;
        }
    }
    Ok(())
}

/// Parse the command line. Options belong after their subcommand; one put
/// before it would be silently ignored, so it is refused instead.
fn parse() -> Result<Cli, ExitCode> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let command = Cli::command();
    let args: Vec<(String, String)> = command
        .get_arguments()
        .filter_map(|a| Some((a.get_id().to_string(), a.get_long()?.to_string())))
        .collect();
    let matches = command.get_matches();
    if let Some((sub, _)) = matches.subcommand() {
        let before: Vec<String> = args
            .iter()
            .filter(|(id, _)| matches.value_source(id) == Some(ValueSource::CommandLine))
            .map(|(_, long)| format!("--{long}"))
            .collect();
        if !before.is_empty() {
            eprintln!(
                "error: {} must come after the subcommand: nano-banana-mcp {sub} {} …",
                before.join(", "),
                before.join(" … ")
            );
            return Err(ExitCode::from(2));
        }
    }
    Cli::from_arg_matches(&matches).map_err(|e| {
        let _ = e.print();
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let cfg = cli
        .command
        .as_ref()
        .and_then(Command::config)
        .unwrap_or(&cli.config);
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    init_logging(cfg);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(nano_banana_mcp::memory::BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => serve_command(&cli.config, &cli.serve).await,
            Some(Command::Generate(c)) => nano_banana_mcp::cli::generate(c)
                .await
                .map_err(Failure::Run),
            Some(Command::Edit(c)) => nano_banana_mcp::cli::edit(c).await.map_err(Failure::Run),
            Some(Command::Demo(c)) => nano_banana_mcp::cli::demo(c).await.map_err(Failure::Run),
            Some(Command::Doctor(c)) => match nano_banana_mcp::cli::doctor(c).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(Failure::Reported),
                Err(e) => Err(Failure::Run(e)),
            },
            Some(Command::Completions { shell }) => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "nano-banana-mcp", &mut std::io::stdout());
                Ok(())
            }
            Some(Command::Serve(c)) => serve_command(&c.config, &c.serve).await,
        }
    });
    // Not a plain drop: that waits for every blocking thread, and the one
    // reading stdin (tokio reads it on a blocking thread) returns only
    // when stdin has a line or closes, so a stdio server told to stop by
    // SIGTERM would live on until its client closed the pipe.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Reported) => ExitCode::FAILURE,
    }
}
