//! The `grin` binary: thin wiring from the command line to the libraries.

mod bar;
mod bench_unlearn;
mod commands;
mod demo;
mod service;
mod settings;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// GRIN: make a language model forget data, and prove it.
#[derive(Debug, Parser)]
#[command(name = "grin", version, about)]
struct Cli {
    /// TOML file of service settings (keys: the GRIN_* variables in lower
    /// case without the prefix); flags and environment variables win over it.
    #[arg(long, global = true, env = "GRIN_SETTINGS")]
    settings: Option<std::path::PathBuf>,
    /// Worker threads for tensor work (default: all cores).
    #[arg(long, global = true, env = "GRIN_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// See the whole service work in one command: builds a small model,
    /// starts the API and a worker on an embedded SQLite database, forgets
    /// one fictitious author over HTTP and verifies the evidence.
    Demo(demo::DemoArgs),
    /// Build a synthetic benchmark (dataset, tokenizer, trained model, oracle).
    #[command(subcommand)]
    Fixture(commands::FixtureCommand),
    /// Fine-tune every weight of a model on a dataset (answer-only loss).
    Finetune(commands::FinetuneArgs),
    /// Make a model forget a dataset (GRIN or a baseline) and write the new
    /// checkpoint with `unlearn.json`.
    Unlearn(commands::UnlearnArgs),
    /// Evaluate a model on forget / retain / holdout sets (TOFU metrics,
    /// keyword metrics, membership inference, forget quality vs an oracle).
    Eval(commands::EvalArgs),
    /// Teacher-forced per-token NLL of a dataset (to compare with other
    /// implementations).
    Score(commands::ScoreArgs),
    /// Create signing keys; verify certificates offline.
    #[command(subcommand)]
    Certificate(commands::CertificateCommand),
    /// Apply the database migrations.
    Migrate(service::ServiceArgs),
    /// Manage API keys.
    Keys {
        #[command(flatten)]
        service: service::ServiceArgs,
        #[command(subcommand)]
        command: service::KeysCommand,
    },
    /// Register and list models.
    Models {
        #[command(flatten)]
        service: service::ServiceArgs,
        #[command(subcommand)]
        command: service::ModelsCommand,
    },
    /// Run the HTTP API (and, with --with-worker, a worker in-process).
    Serve {
        #[command(flatten)]
        service: service::ServiceArgs,
        #[command(flatten)]
        serve: service::ServeArgs,
    },
    /// Verify the audit log's hash chain.
    Audit {
        #[command(flatten)]
        service: service::ServiceArgs,
        #[command(subcommand)]
        command: service::AuditCommand,
    },
    /// Run a worker: claim jobs and unlearn.
    Worker {
        #[command(flatten)]
        service: service::ServiceArgs,
        #[command(flatten)]
        worker: service::WorkerArgs,
    },
    /// Measure speed.
    #[command(subcommand)]
    Bench(commands::BenchCommand),
}

fn main() -> Result<()> {
    // The settings file fills in the environment before anything reads it.
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = settings::settings_path(&args) {
        for (var, value) in settings::from_file(std::path::Path::new(&path))? {
            std::env::set_var(var, value);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRIN_LOG").unwrap_or_else(|_| "warn,grin=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // Before the first tensor operation: size the pool the matrix products
    // and fused kernels share, and turn off candle's second, spinning pool.
    grin::ops::configure_threads(cli.threads);
    match cli.command {
        Command::Demo(a) => demo::demo(a),
        Command::Audit { service, command } => service::audit(service, command),
        Command::Fixture(c) => commands::fixture(c),
        Command::Finetune(a) => commands::finetune(a),
        Command::Unlearn(a) => commands::unlearn(a),
        Command::Eval(a) => commands::eval(a),
        Command::Score(a) => commands::score(a),
        Command::Certificate(c) => commands::certificate(c),
        Command::Bench(c) => commands::bench(c),
        Command::Migrate(s) => service::migrate(s),
        Command::Keys { service, command } => service::keys(service, command),
        Command::Models { service, command } => service::models(service, command),
        Command::Serve { service, serve } => service::serve(service, serve),
        Command::Worker { service, worker } => service::worker(service, worker),
    }
}
