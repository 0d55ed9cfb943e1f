//! The command line of `fedprofile-coordinator`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::certs::{self, Role, Validity};
use crate::config::CoordinatorConfig;
use crate::daemon::{self, ServeOptions};
use crate::operator::{OperatorCommand, OperatorConfig};

/// The fedprofile coordinator: runs federated rounds over gRPC and mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "fedprofile-coordinator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the coordinator: serve partners and operators, train queued runs.
    ///
    /// Long-lived: fedprofile-coordinator serve --config coordinator.toml
    /// One run and exit (the demo): fedprofile-coordinator serve --config coordinator.toml --run run.toml --out out/
    Serve(ServeArgs),
    /// Development certificates (a federation CA and certificates it signs).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Operators: start, list, inspect, cancel and watch runs over the admin API.
    #[command(subcommand)]
    Run(RunCommand),
    /// Operators: the model registry (versions per target, the champion).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Operators: the partners known to the coordinator, connected or not.
    Clients(OperatorArgs),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// A whole federation on this machine: certificates, the coordinator and
    /// one client node per partner on loopback, one run (docs/quickstart.md).
    ///
    /// Example: fedprofile-coordinator local --federation federation.toml --out out/demo
    Local(LocalArgs),
}

#[derive(Debug, Args)]
struct LocalArgs {
    /// The federation file (TOML): the run file, the partners (README, "One machine").
    #[arg(long)]
    federation: PathBuf,
    /// The run file (overrides the federation file's `run`).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Output folder: model.json, metrics.csv, summary.json, logs/, certs/, ledgers/.
    #[arg(long)]
    out: PathBuf,
    /// The fedprofile-client executable (default: the one next to this executable).
    #[arg(long)]
    client_bin: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct OperatorArgs {
    /// Operator config (TOML): coordinator URL and the operator certificate.
    #[arg(
        long,
        env = "FEDPROFILE_OPERATOR_CONFIG",
        default_value = "operator.toml"
    )]
    operator_config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    /// Queue a run file; prints the run id.
    Start {
        /// The run file (TOML).
        run_file: PathBuf,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// All runs, newest first.
    List {
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// One run's state and latest pooled metrics.
    Status {
        /// Run id.
        run_id: String,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Cancel a queued or running run.
    Cancel {
        /// Run id.
        run_id: String,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// A live progress bar over the rounds until the run ends.
    Watch {
        /// Run id.
        run_id: String,
        #[command(flatten)]
        operator: OperatorArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Every version of every target (or of one), with its status.
    List {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// One version (TARGET@N), or a target's champion (TARGET).
    Show {
        /// TARGET@N or TARGET.
        version: String,
        /// Write its model file here.
        #[arg(long)]
        model_out: Option<PathBuf>,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Make TARGET@N its target's champion (the champion is retired).
    Promote {
        /// TARGET@N.
        version: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Retire TARGET's champion and restore the champion it replaced.
    Rollback {
        /// The target.
        target: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        operator: OperatorArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Checks the hash chain; exits 1 naming the first edited, removed or reordered line.
    Verify {
        /// The audit log (state_dir/audit.jsonl).
        file: PathBuf,
    },
    /// Cuts an incomplete last line (left by a power loss) off the log, saves
    /// it beside the log, and records the recovery in the log. Stop the
    /// coordinator first. Any other damage is refused.
    Recover {
        /// The audit log (state_dir/audit.jsonl).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Coordinator config (TOML): listen address, TLS files, state folder, metrics.
    #[arg(long)]
    config: PathBuf,
    /// Queue this run file at start, then exit once no run is left (one-shot mode).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Also write the outputs of the runs this process finishes here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the config's state folder (database, ledgers, audit log, reports).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Exit once no run is queued or in progress (implied by --run).
    #[arg(long)]
    exit_when_idle: bool,
    /// Override the config's listen address (e.g. 127.0.0.1:0 for any free port).
    #[arg(long)]
    listen: Option<String>,
    /// Override the metrics address (e.g. 127.0.0.1:0).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Write the bound address to this file once listening (and the metrics
    /// address to the same path with the extension `.metrics`).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Plain-text gRPC without TLS; refused unless the address is loopback.
    #[arg(long)]
    insecure: bool,
    /// Start even though part of the state was lost (the database or the
    /// audit log missing, emptied or behind the other), and record what was
    /// lost in the audit log. Without it such a state is refused.
    #[arg(long)]
    accept_state_loss: bool,
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
        #[arg(long, conflicts_with = "operator")]
        server: bool,
        /// Issue an operator certificate (for the admin API) instead of a partner one.
        #[arg(long)]
        operator: bool,
        /// Extra DNS names (server certificates).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Issue an already expired certificate (to test that it is refused).
        #[arg(long, hide = true)]
        expired: bool,
    },
    /// Revoke <name>.pem: add it to DIR/crl.pem, which the coordinator re-reads.
    Revoke {
        /// Folder holding ca.pem, ca.key and the certificate.
        #[arg(long)]
        dir: PathBuf,
        /// The id of the certificate to revoke.
        #[arg(long)]
        name: String,
    },
}

/// Parses the command line, runs the command, and maps errors to a one-line
/// message and exit code 1 (2 for usage errors, from clap).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    fedprofile_config::init_logging("warn,fedprofile_coordinator=info");
    fedprofile_protocol::tls::install_crypto_provider();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
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
            certs::init_federation(&dir, &server_name, &sans, &clients, days)
                .map_err(|e| e.to_string())?;
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
            operator,
            sans,
            days,
            expired,
        }) => {
            let role = if server {
                Role::Server
            } else if operator {
                Role::Operator
            } else {
                Role::Client
            };
            let validity = if expired {
                Validity::Expired
            } else {
                Validity::Days(days)
            };
            let (cert, key) =
                certs::issue(&dir, &name, role, &sans, validity).map_err(|e| e.to_string())?;
            println!("wrote {} and {}", cert.display(), key.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(CertsCommand::Revoke { dir, name }) => {
            let serial = certs::revoke(&dir, &name).map_err(|e| e.to_string())?;
            println!(
                "revoked {name} (serial {serial}); {} updated: the coordinator picks it up on its next reload (SIGHUP or file change)",
                certs::crl_path(&dir).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve(args),
        Command::Local(args) => {
            let options = crate::local::LocalOptions {
                federation: args.federation,
                run: args.run,
                out: args.out,
                client_bin: args.client_bin,
            };
            crate::local::run(&options).map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(command) => {
            let (operator, command) = match command {
                RunCommand::Start { run_file, operator } => {
                    (operator, OperatorCommand::Start(run_file))
                }
                RunCommand::List { operator } => (operator, OperatorCommand::List),
                RunCommand::Status { run_id, operator } => {
                    (operator, OperatorCommand::Status(run_id))
                }
                RunCommand::Cancel {
                    run_id,
                    reason,
                    operator,
                } => (operator, OperatorCommand::Cancel(run_id, reason)),
                RunCommand::Watch { run_id, operator } => {
                    (operator, OperatorCommand::Watch(run_id))
                }
            };
            operate(&operator, command)
        }
        Command::Model(command) => {
            let (operator, command) = match command {
                ModelCommand::List { target, operator } => {
                    (operator, OperatorCommand::ModelList(target))
                }
                ModelCommand::Show {
                    version,
                    model_out,
                    operator,
                } => (operator, OperatorCommand::ModelShow(version, model_out)),
                ModelCommand::Promote {
                    version,
                    reason,
                    operator,
                } => (operator, OperatorCommand::ModelPromote(version, reason)),
                ModelCommand::Rollback {
                    target,
                    reason,
                    operator,
                } => (operator, OperatorCommand::ModelRollback(target, reason)),
            };
            operate(&operator, command)
        }
        Command::Clients(operator) => operate(&operator, OperatorCommand::Clients),
        Command::Audit(AuditCommand::Verify { file }) => {
            let entries = crate::audit::verify(&file).map_err(|e| e.to_string())?;
            println!(
                "{}: intact, {} events, head {}",
                file.display(),
                entries.len(),
                entries
                    .last()
                    .map_or(crate::audit::GENESIS, |e| e.hash.as_str())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Recover { file }) => {
            let done = crate::audit::recover_torn_tail(&file).map_err(|e| e.to_string())?;
            println!(
                "{}: cut an incomplete last line of {} bytes (saved to {}); {} events kept, the recovery is recorded in the log",
                file.display(),
                done.bytes,
                done.saved.display(),
                done.kept
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn operate(args: &OperatorArgs, command: OperatorCommand) -> Result<ExitCode, String> {
    let config = OperatorConfig::from_path(&args.operator_config)?;
    runtime()?.block_on(crate::operator::run(&config, command))?;
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let mut config = CoordinatorConfig::from_path(&args.config).map_err(|e| e.to_string())?;
    if let Some(listen) = &args.listen {
        config.listen = listen
            .parse()
            .map_err(|e| format!("--listen '{listen}' is not an address like 127.0.0.1:0 ({e})"))?;
    }
    if let Some(listen) = &args.metrics_listen {
        config.metrics_listen = Some(listen.parse().map_err(|e| {
            format!("--metrics-listen '{listen}' is not an address like 127.0.0.1:0 ({e})")
        })?);
    }
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    let queue_run = match &args.run {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
            // Validate now so a bad run file fails before anything starts.
            fedprofile_config::run::RunConfig::from_toml_str(&text, path)
                .map_err(|e| e.to_string())?;
            Some((path.clone(), text))
        }
        None => None,
    };
    let options = ServeOptions {
        exit_when_idle: args.exit_when_idle || queue_run.is_some(),
        progress: queue_run.is_some() || args.out.is_some(),
        config,
        queue_run,
        out_dir: args.out,
        insecure: args.insecure,
        addr_file: args.addr_file,
        accept_state_loss: args.accept_state_loss,
    };
    let outcome = runtime()?.block_on(async {
        let listener = daemon::bind(&options).await?;
        daemon::serve(options.clone(), listener, shutdown_signal()).await
    });
    let outcome = outcome.map_err(|e| e.to_string())?;
    match outcome {
        Some(outcome) => match outcome.failure {
            None => {
                if let Some(out) = &options.out_dir {
                    println!("outputs written to {}", out.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            Some(why) => Err(format!("run {} did not complete: {why}", outcome.run_id)),
        },
        None => Ok(ExitCode::SUCCESS),
    }
}

pub(crate) async fn shutdown_signal() {
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
