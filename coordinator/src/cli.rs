//! The command line of `fedprofile-coordinator`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::certs::{self, Role, Validity};
use crate::config::{CoordinatorConfig, RunConfig};
use crate::report::ProgressPrinter;
use crate::server::{self, ServeOptions};

/// The fedprofile coordinator: runs federated rounds over gRPC and mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "fedprofile-coordinator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve one federated run: wait for clients, train, write the outputs, exit.
    ///
    /// Example: fedprofile-coordinator serve --config coordinator.toml --run run.toml --out out/
    Serve(ServeArgs),
    /// Development certificates (a federation CA and certificates it signs).
    #[command(subcommand)]
    Certs(CertsCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Coordinator config (TOML): listen address, TLS files, message size limit.
    #[arg(long)]
    config: PathBuf,
    /// Run file (TOML): rounds, clients per round, deadline, training hyperparameters.
    #[arg(long)]
    run: PathBuf,
    /// Folder for model.json, metrics.csv and summary.json.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Override the config's listen address (e.g. 127.0.0.1:0 for any free port).
    #[arg(long)]
    listen: Option<String>,
    /// Write the bound address to this file once listening.
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Plain-text gRPC without TLS; refused unless the address is loopback.
    #[arg(long)]
    insecure: bool,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Create a new CA and issue the coordinator's and each client's certificate.
    ///
    /// Example: fedprofile-coordinator certs init --dir certs --client partner-a --client partner-b
    Init {
        /// Folder to write ca.pem, ca.key, coordinator.pem/.key and <client>.pem/.key.
        #[arg(long)]
        dir: PathBuf,
        /// A client (partner) id; repeat for each.
        #[arg(long = "client")]
        clients: Vec<String>,
        /// Name of the coordinator's certificate (also a DNS SAN, with localhost and 127.0.0.1).
        #[arg(long, default_value = "coordinator")]
        server_name: String,
        /// Extra DNS names for the coordinator's certificate.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Issue one more certificate from an existing CA in --dir.
    Issue {
        /// Folder holding ca.pem and ca.key.
        #[arg(long)]
        dir: PathBuf,
        /// The id (CN) of the new certificate.
        #[arg(long)]
        name: String,
        /// Issue a server certificate instead of a client one.
        #[arg(long)]
        server: bool,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Issue an already expired certificate (to test that it is refused).
        #[arg(long, hide = true)]
        expired: bool,
    },
}

/// Parses the command line, runs the command, and maps errors to a one-line
/// message and exit code 1 (2 for usage errors, from clap).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fedprofile_coordinator=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Certs(CertsCommand::Init {
            dir,
            clients,
            server_name,
            sans,
            days,
        }) => {
            certs::init_ca(&dir, "fedprofile development CA", days).map_err(|e| e.to_string())?;
            certs::issue(
                &dir,
                &server_name,
                Role::Server,
                &sans,
                Validity::Days(days),
            )
            .map_err(|e| e.to_string())?;
            for client in &clients {
                certs::issue(&dir, client, Role::Client, &[], Validity::Days(days))
                    .map_err(|e| e.to_string())?;
            }
            println!(
                "wrote a CA, the coordinator certificate '{server_name}' and {} client certificates to {}",
                clients.len(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(CertsCommand::Issue {
            dir,
            name,
            server,
            days,
            expired,
        }) => {
            let role = if server { Role::Server } else { Role::Client };
            let validity = if expired {
                Validity::Expired
            } else {
                Validity::Days(days)
            };
            let (cert, key) =
                certs::issue(&dir, &name, role, &[], validity).map_err(|e| e.to_string())?;
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let mut config = CoordinatorConfig::from_path(&args.config).map_err(|e| e.to_string())?;
    if let Some(listen) = &args.listen {
        config.listen = listen
            .parse()
            .map_err(|e| format!("--listen '{listen}' is not an address like 127.0.0.1:0 ({e})"))?;
    }
    let run = RunConfig::from_path(&args.run).map_err(|e| e.to_string())?;
    let options = ServeOptions {
        config,
        run,
        out_dir: args.out,
        insecure: args.insecure,
        addr_file: args.addr_file,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let outcome = runtime.block_on(async {
        let listener = server::bind(&options).await?;
        server::serve_run(
            options.clone(),
            listener,
            Box::new(ProgressPrinter),
            shutdown_signal(),
        )
        .await
    });
    let outcome = outcome.map_err(|e| e.to_string())?;
    match outcome.failure {
        None => {
            println!("outputs written to {}", options.out_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(why) => Err(format!("run {} did not complete: {why}", outcome.run_id)),
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
