//! The `sealgate` command line: `serve`, and `policy load` for operators.

use sealgate::{admin_client, allocator, config, server};

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

// One value per process: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the gateway (S3 listener and admin listener)
    Serve(config::ServeArgs),
    /// Manage the policy module of a running gateway
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Key management on a running gateway
    #[command(subcommand)]
    Kms(KmsCommand),
}

/// Where the running gateway's admin listener is.
#[derive(clap::Args)]
struct AdminTarget {
    /// Admin listener of the gateway
    #[arg(long, env = "SEALGATE_ADMIN_URL", default_value = "http://127.0.0.1:9001")]
    admin_url: String,
    /// Its bearer token (in the gateway's data dir as `admin-token` when generated)
    #[arg(long, env = "SEALGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

#[derive(Subcommand)]
enum KmsCommand {
    /// Rotate a bucket's master key: create a new one in the same KMS, re-wrap the bucket's bucket keys
    /// under it (no object is rewritten), then destroy the old key. Objects stay readable throughout;
    /// an interrupted run is resumed by running it again.
    Rewrap {
        /// The bucket whose master key is rotated
        #[arg(long)]
        bucket: String,
        /// Leave the old master key in the KMS (destroy it there yourself later)
        #[arg(long)]
        keep_old_key: bool,
        /// Also re-wrap every object's data key under a new bucket key and drop the old bucket keys
        /// (metadata only; needed to move objects written before the key hierarchy into it)
        #[arg(long)]
        deep: bool,
        #[command(flatten)]
        admin: AdminTarget,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Swap in a policy module (a sealgate:policy@2.0.0 or 1.0.0 component) without a restart.
    /// The gateway compiles, checks and self-tests it first; a refused module changes nothing.
    Load {
        /// The component file, e.g. target/policies/encrypt-all.wasm
        file: std::path::PathBuf,
        #[command(flatten)]
        admin: AdminTarget,
    },
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
    allocator::tune_for_streaming();
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.command {
        Command::Serve(args) => server::serve(args.resolve()?).await,
        Command::Policy(PolicyCommand::Load { file, admin }) => {
            let module = std::fs::read(&file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            println!("{}", admin_client::load_policy(&admin.admin_url, &admin.admin_token, module).await?);
            Ok(())
        }
        Command::Kms(KmsCommand::Rewrap { bucket, keep_old_key, deep, admin }) => {
            let report =
                admin_client::rewrap(&admin.admin_url, &admin.admin_token, &bucket, keep_old_key, deep).await?;
            println!("{report}");
            Ok(())
        }
    }
}
