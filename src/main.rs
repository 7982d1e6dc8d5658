//! The `ballast` command: the demo, `run`, `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ballast::{config, demo, server, shards};

/// A self-hosted Elastic Load Balancing: ALB, NLB, GWLB and auto scaling in one binary.
#[derive(Parser)]
#[command(name = "ballast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer from a config file.
    Run {
        /// The TOML config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or 1 with every error's file, line and key.
    Check {
        /// The TOML config file.
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BALLAST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match cli.command {
        Some(Command::Check { config }) => match config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Run { config: path }) => match config::load(&path) {
            Ok(config) => {
                let runtime = config.runtime.clone();
                run(runtime, async move { serve(config, path).await })
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        None => run(config::Runtime::default(), run_demo()),
    }
}

fn run(settings: config::Runtime, main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let count = match settings.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let cores = if settings.pin_workers { shards::cores_for(count) } else { None };
    let first = cores.as_ref().map(|c| c[0]);
    let started = shards::runtime(0, first)
        .and_then(|runtime| shards::start(count, runtime.handle().clone(), cores.as_deref()).map(|()| runtime));
    match started {
        Ok(runtime) => runtime.block_on(main),
        Err(e) => {
            eprintln!("ballast: cannot start the worker threads: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: config::Config, path: PathBuf) -> ExitCode {
    match server::start(config, Some(path)).await {
        Ok(_running) => {
            server::wait_for_shutdown().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ballast: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_demo() -> ExitCode {
    let mut backends = Vec::new();
    for i in 1..=3 {
        match demo::start_backend(format!("demo backend {i}")).await {
            Ok(addr) => backends.push(addr),
            Err(e) => {
                eprintln!("ballast: cannot start a demo backend: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let config = match demo::demo_config(&backends) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ballast: the demo config is broken: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server::start(config, None).await {
        Ok(_running) => {
            println!(
                "ballast demo: three backends behind http://{}/ — run `curl http://{}/` three times to see the rotation; the dashboard is on http://{}/; Ctrl-C stops",
                demo::DEMO_BIND,
                demo::DEMO_BIND,
                demo::DEMO_ADMIN_BIND
            );
            server::wait_for_shutdown().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ballast: {e}");
            ExitCode::FAILURE
        }
    }
}
