//! sealgate: an S3 gateway that encrypts whole buckets transparently.

mod admin;
mod auth;
mod config;
mod crypto;
mod kms;
mod metrics;
mod policy;
mod s3;
mod server;
mod storage;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// An S3 gateway that encrypts whole buckets transparently.
///
/// Every setting is a flag, a SEALGATE_* environment variable, or a key in
/// the TOML file given with --config (flags win over the environment, which
/// wins over the file).
#[derive(Parser)]
#[command(name = "sealgate", version, about, long_about)]
struct Cli {
    /// Log output: `text` or `json`
    #[arg(long, env = "SEALGATE_LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (S3 listener and admin listener)
    Serve(config::ServeArgs),
}

fn init_logging(format: &str) {
    // s3s logs every S3 error at ERROR; the request line below already says
    // what happened, so its own logs are kept for warnings about itself.
    let filter = EnvFilter::try_from_env("SEALGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info,s3s=off"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.command {
        Command::Serve(args) => server::serve(args.resolve()?).await,
    }
}
