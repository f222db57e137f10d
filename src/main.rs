//! Wiring only: parse the command line, set up logging (stderr), build the
//! app, and hand it to the transport or command that was asked for.

#![deny(clippy::dbg_macro)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use nano_banana_mcp::app::{App, BuildOptions, Transport};
use nano_banana_mcp::config::{Cli, Command, Config, ServeArgs};
use nano_banana_mcp::{http, memory, serve, testkit};

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

async fn serve_command(cfg: &Config, args: &ServeArgs) -> Result<(), String> {
    match args.http {
        Some(addr) => {
            let http = args.http_config(addr)?;
            let app = App::build(
                cfg,
                BuildOptions {
                    transport: Transport::Http,
                    allow_configure_token: args.allow_configure_token,
                    stateless: args.stateless,
                },
            )
            .await?;
            http::serve(Arc::new(app), http).await
        }
        None => {
            let app = App::build(
                cfg,
                BuildOptions {
                    transport: Transport::Stdio,
                    allow_configure_token: true,
                    stateless: false,
                },
            )
            .await?;
            serve::stdio(Arc::new(app), cfg.max_line_bytes as usize).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    init_logging(&cli.config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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
            Some(Command::FakeGemini(args)) => testkit::fake_gemini::serve_forever(
                args.addr,
                testkit::fake_gemini::FakeConfig {
                    api_key: args.api_key.map(|k| k.expose().to_string()),
                    latency: std::time::Duration::from_millis(args.latency_ms),
                    ..testkit::fake_gemini::FakeConfig::default()
                },
            )
            .await
            .map_err(|e| e.to_string()),
            None => serve_command(&cli.config, &ServeArgs::default()).await,
            Some(Command::Generate(c)) => nano_banana_mcp::cli::generate(&cli.config, c).await,
            Some(Command::Edit(c)) => nano_banana_mcp::cli::edit(&cli.config, c).await,
            Some(Command::Demo(c)) => nano_banana_mcp::cli::demo(&cli.config, c).await,
            Some(Command::Doctor(c)) => match nano_banana_mcp::cli::doctor(&cli.config, c).await {
                Ok(true) => Ok(()),
                // The checklist already said what is wrong.
                Ok(false) => Err(String::new()),
                Err(e) => Err(e),
            },
            Some(Command::Completions { shell }) => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "nano-banana-mcp", &mut std::io::stdout());
                Ok(())
            }
            Some(Command::Serve(args)) => serve_command(&cli.config, &args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
