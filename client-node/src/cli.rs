//! The command line of `fedprofile-client`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::config::ClientConfig;
use crate::node::Node;
use crate::session::{self, SessionEnd, TransportOptions};

/// The fedprofile client node: runs next to a partner's data, trains on it
/// locally and sends only model updates (never rows) to the coordinator.
#[derive(Debug, Parser)]
#[command(name = "fedprofile-client", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join the federation: connect to the coordinator and serve tasks until the run ends.
    ///
    /// Example: fedprofile-client run --config client.toml
    Run {
        /// Client config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Override the coordinator URL of the config (e.g. https://localhost:40123).
        #[arg(long)]
        coordinator: Option<String>,
        /// Override the number of connection attempts.
        #[arg(long)]
        connect_attempts: Option<u32>,
        /// Plain-text gRPC to a loopback coordinator, claiming this client id (development only).
        #[arg(long, value_name = "CLIENT_ID")]
        insecure: Option<String>,
        /// Stay connected after a run ends and serve the next runs (production).
        #[arg(long)]
        keep_running: bool,
        /// With --keep-running: look at the export's files every this many
        /// seconds; a change reloads the data between runs and sends the
        /// coordinator a new data fingerprint (rows per split, a hash; never rows).
        #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        data_poll_secs: u64,
        /// Override the privacy ledger file of the config's [privacy] section.
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// Seed the training RNG for reproducibility tests. The updates are then
        /// NOT private, and the coordinator is told so.
        #[arg(long, value_name = "SEED")]
        insecure_test_seed: Option<u64>,
        /// TEST ONLY: send poisoned updates (scaled, sign-flip, random) to test
        /// robust aggregation. Only in binaries built with the `testutils`
        /// feature (the test suite's); release binaries have no such flag.
        #[cfg(feature = "testutils")]
        #[arg(long, value_name = "MODE", hide = true)]
        insecure_test_poison: Option<crate::node::Poison>,
        /// TEST ONLY: after charging a training task of round ROUND to the
        /// ledger, stall forever without answering (to test crash recovery).
        #[arg(long, value_name = "ROUND", hide = true)]
        insecure_test_stall_after_charge: Option<u32>,
        /// Use only part of this partner's users (INDEX/COUNT by user-id hash), to
        /// run one partner as several clients.
        #[arg(long, value_name = "INDEX/COUNT")]
        shard: Option<crate::node::Shard>,
    },
    /// Print the data-quality report of the train and test splits; contacts nobody.
    ///
    /// Example: fedprofile-client check-data --config client.toml --json
    CheckData {
        /// Client config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Machine-readable JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Per-user profiles: prediction and the features that pushed it most.
    ///
    /// Example: fedprofile-client profile --config client.toml --model out/demo/model.json --model out/value/model.json --segments out/segments/model.json --out profiles.csv
    Profile {
        /// Client config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Global model file (model.json of a logistic, linear or softmax regression
        /// run); repeat for several models (e.g. churn and monthly value).
        #[arg(long)]
        model: Vec<PathBuf>,
        /// A segmentation model (a k-means model.json): adds each user's segment.
        #[arg(long)]
        segments: Option<PathBuf>,
        /// Split to profile.
        #[arg(long, default_value = "test")]
        split: String,
        /// How many top contributing features per user.
        #[arg(long, default_value_t = 3)]
        top: usize,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
    /// Privacy: cost of a run, calibration, the ledger, the per-round report.
    #[command(subcommand)]
    Privacy(crate::privacy_cli::PrivacyCommand),
    /// Schema: infer one from this partner's exports, merge partners' schemas, check one
    /// against the data (docs/schema.md, "Starting a schema from your exports").
    #[command(subcommand)]
    Schema(crate::schema_cli::SchemaCommand),
    /// Score this partner's users with a global model; writes user_id,score.
    ///
    /// Example: fedprofile-client score --config client.toml --model out/model.json --split test --out scores.csv
    Score {
        /// Client config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Global model file (model.json).
        #[arg(long)]
        model: PathBuf,
        /// Split to score.
        #[arg(long, default_value = "test")]
        split: String,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Parses the command line, runs the command, prints errors as one sentence.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    fedprofile_config::init_logging("warn,fedprofile_client=info");
    fedprofile_protocol::tls::install_crypto_provider();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (e.g. `check-data | head -n 1`): nothing more to say,
        // and not a failure of ours (ripgrep does the same).
        Err(Failure::StdoutClosed) => ExitCode::SUCCESS,
        Err(Failure::Message(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// Why a command stopped.
#[derive(Debug)]
enum Failure {
    /// A sentence for stderr; exit code 1.
    Message(String),
    /// Stdout was closed by its reader: stop quietly.
    StdoutClosed,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Message(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Message(message.to_owned())
    }
}

/// Prints one line (or block) on stdout; a closed stdout is [`Failure::StdoutClosed`],
/// never a panic (`println!` panics on a broken pipe).
fn out(text: impl std::fmt::Display) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::StdoutClosed),
        Err(e) => Err(Failure::Message(format!("cannot write to stdout: {e}"))),
    }
}

fn load_config(path: &std::path::Path) -> Result<ClientConfig, String> {
    ClientConfig::from_path(path).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct SplitReport<'a> {
    split: &'a str,
    report: &'a fedprofile_data::QualityReport,
    /// Why `run` would refuse this split (empty when it is usable).
    problems: &'a [String],
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Privacy(command) => crate::privacy_cli::run(command).map_err(Failure::from),
        Command::Schema(command) => crate::schema_cli::run(command).map_err(Failure::from),
        Command::Profile {
            config,
            model,
            segments,
            split,
            top,
            out,
        } => {
            if model.is_empty() && segments.is_none() {
                return Err("profile needs --model, --segments or both".into());
            }
            let config = load_config(&config)?;
            let profiled = crate::profile::profile(
                &config.schema,
                &config.data_dir,
                &split,
                &model,
                segments.as_deref(),
                top,
                &out,
            )
            .map_err(|e| e.to_string())?;
            for note in &profiled.notes {
                tracing::warn!("{note}");
            }
            self::out(format!(
                "profiled {} users of split '{split}' into {}",
                profiled.rows,
                out.display()
            ))
        }
        Command::CheckData { config, json } => {
            let config = load_config(&config)?;
            let schema =
                fedprofile_data::Schema::from_path(&config.schema).map_err(|e| e.to_string())?;
            // (split, report, problems): the same verdict `run` applies at start-up.
            let mut reports = Vec::new();
            for split in [&config.train_split, &config.test_split] {
                let loaded = fedprofile_data::load_split(&schema, &config.data_dir, split)
                    .map_err(|e| e.to_string())?;
                let problems: Vec<String> =
                    loaded.problems().iter().map(ToString::to_string).collect();
                reports.push((split.clone(), loaded.report, problems));
            }
            let printed = if json {
                let rows: Vec<SplitReport<'_>> = reports
                    .iter()
                    .map(|(split, report, problems)| SplitReport {
                        split,
                        report,
                        problems,
                    })
                    .collect();
                let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
                out(text)
            } else {
                reports
                    .iter()
                    .try_for_each(|(split, report, _)| out(format!("== split '{split}'\n{report}")))
            };
            let problems: Vec<&str> = reports
                .iter()
                .flat_map(|(_, _, p)| p.iter().map(String::as_str))
                .collect();
            if !problems.is_empty() {
                return Err(Failure::Message(problems.join("\nerror: ")));
            }
            printed
        }
        Command::Score {
            config,
            model,
            split,
            out,
        } => {
            let config = load_config(&config)?;
            let rows = crate::score::score(&config.schema, &config.data_dir, &split, &model, &out)
                .map_err(|e| e.to_string())?;
            self::out(format!(
                "scored {rows} users of split '{split}' into {}",
                out.display()
            ))
        }
        Command::Run {
            config,
            coordinator,
            connect_attempts,
            insecure,
            insecure_test_seed,
            #[cfg(feature = "testutils")]
            insecure_test_poison,
            insecure_test_stall_after_charge,
            shard,
            ledger,
            keep_running,
            data_poll_secs,
        } => {
            let mut config = load_config(&config)?;
            if let Some(path) = ledger {
                match config.privacy.as_mut() {
                    Some(p) => p.ledger = path,
                    None => {
                        return Err(
                            "--ledger needs a [privacy] section (the budget) in the client config"
                                .into(),
                        );
                    }
                }
            }
            if let Some(url) = coordinator {
                config.coordinator = url;
            }
            if let Some(n) = connect_attempts {
                config.connect.attempts = n.max(1);
            }
            let node = Node::load(
                &config.schema,
                &config.data_dir,
                &config.train_split,
                &config.test_split,
                config.privacy.as_ref(),
                crate::node::TestOptions {
                    seed: insecure_test_seed,
                    #[cfg(feature = "testutils")]
                    poison: insecure_test_poison,
                    shard,
                    stall_after_charge: insecure_test_stall_after_charge,
                },
            )
            .map_err(|e| e.to_string())?;
            let follow = config.follow.clone().map(|settings| {
                std::sync::Arc::new(crate::follow::Follower {
                    settings,
                    schema: config.schema.clone(),
                    data_dir: config.data_dir.clone(),
                })
            });
            let options = TransportOptions {
                insecure_name: insecure,
                keep_running,
                follow,
                data_poll: std::time::Duration::from_secs(data_poll_secs),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            let end = runtime
                .block_on(session::run(&config, &options, node))
                .map_err(|e| e.to_string())?;
            let SessionEnd::RunFinished(message) = end;
            out(message)
        }
    }
}
