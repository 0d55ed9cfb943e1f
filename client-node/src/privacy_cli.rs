//! `fedprofile-client privacy …`: the privacy team's commands. None of them
//! contacts the coordinator.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use fedprofile_config::run::{PrivacyMode, RecordNoise, RunConfig};
use fedprofile_privacy::ledger::Ledger;
use fedprofile_privacy::{Accountant, AccountantKind, Charge, Report, UtilityWarning};
use fedprofile_protocol::messages::RecordDpTask;
use serde::Serialize;

use crate::config::ClientConfig;
use fedprofile_config::run::show_duration_secs as show_secs;
use fedprofile_protocol::tls::rfc3339;

/// `println!` that does not panic when stdout is closed (`… | head`): the
/// command then ends quietly, like the client's other commands.
macro_rules! say {
    ($($arg:tt)*) => {
        print_line(&format!($($arg)*))
    };
}

/// Writes one line to stdout; a closed pipe (`| head`) ends the process
/// quietly, any other write error with a sentence and status 1.
pub(crate) fn print_line(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

/// Privacy commands.
#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// The epsilon a run (or explicit q, sigma, steps) would spend, before anything runs.
    ///
    /// Examples:
    ///   fedprofile-client privacy cost --sampling-rate 0.01 --noise-multiplier 1.1 --steps 1000 --delta 1e-5
    ///   fedprofile-client privacy cost --run run.toml --config client.toml --json
    Cost(CostArgs),
    /// The smallest noise multiplier that meets a target (epsilon, delta).
    ///
    /// Example: fedprofile-client privacy calibrate --epsilon 1 --delta 1e-5 --sampling-rate 0.01 --steps 1000
    Calibrate {
        /// Target epsilon.
        #[arg(long)]
        epsilon: f64,
        /// Delta.
        #[arg(long)]
        delta: f64,
        /// Poisson sampling rate q.
        #[arg(long)]
        sampling_rate: f64,
        /// Number of steps.
        #[arg(long)]
        steps: u64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// The privacy ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Per round: epsilon spent and cumulative, with a PNG plot against the budget.
    ///
    /// Example: fedprofile-client privacy report --ledger privacy-ledger.jsonl --budget-epsilon 1 --out report/
    Report {
        /// The ledger file.
        #[arg(long)]
        ledger: PathBuf,
        /// Budget epsilon to draw (default: from --config, if given).
        #[arg(long)]
        budget_epsilon: Option<f64>,
        /// Client config, for its budget.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Folder for epsilon.png and rounds.csv.
        #[arg(long, default_value = "privacy-report")]
        out: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Ledger commands.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// The spend so far, line by line.
    Show {
        /// The ledger file.
        file: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Checks the hash chain; exits non-zero naming the first bad line.
    ///
    /// A missing or empty ledger is an error (a ledger that should hold
    /// charges may have been lost) unless --allow-empty is given.
    Verify {
        /// The ledger file.
        file: PathBuf,
        /// Accept a missing or empty ledger (it holds nothing: exit 0).
        #[arg(long)]
        allow_empty: bool,
    },
}

/// Which accountant to report.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccountantChoice {
    /// Rényi DP.
    Rdp,
    /// Privacy-loss distribution.
    Pld,
}

/// `privacy cost` arguments.
#[derive(Debug, Args)]
pub struct CostArgs {
    /// Poisson sampling rate q.
    #[arg(long, requires_all = ["noise_multiplier", "steps", "delta"], conflicts_with = "run")]
    sampling_rate: Option<f64>,
    /// Noise multiplier sigma.
    #[arg(long)]
    noise_multiplier: Option<f64>,
    /// Number of steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Delta.
    #[arg(long)]
    delta: Option<f64>,
    /// A run file (with --config: this partner's data size and budget).
    #[arg(long, requires = "config")]
    run: Option<PathBuf>,
    /// This partner's client config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// With --run: the ledger to compose the run with, instead of the one in
    /// the config's [privacy] section.
    #[arg(long, requires = "run")]
    ledger: Option<PathBuf>,
    /// With --run: the run file's `[update]` schedule (`every`, `on_new_data`)
    /// against this partner's budget: epsilon per update, how many updates
    /// the budget still allows, and the date it runs out.
    #[arg(long, requires = "run")]
    schedule: bool,
    /// Report this accountant's figure instead of the tighter one.
    #[arg(long, value_enum)]
    accountant: Option<AccountantChoice>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct CostOutput {
    epsilon: f64,
    accountant: &'static str,
    delta: f64,
    rdp_epsilon: f64,
    rdp_order: f64,
    pld_epsilon: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<RunPlan>,
    /// With --run: the run composed with the partner's ledger.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    budget: Option<BudgetCheck>,
    /// With --run: why the plan may learn little (DP-SGD families).
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<WarningOutput>>,
    /// With --schedule: the schedule over the partner's budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<SchedulePlan>,
}

/// `privacy cost --schedule`: a scheduled update run over the partner's
/// budget. Each update is the run file's run (its charges, composed with the
/// ledger and every earlier update; RDP/PLD composition, not a sum).
#[derive(Debug, Clone, PartialEq, Serialize)]
struct SchedulePlan {
    /// Epsilon of one update alone.
    epsilon_per_update: f64,
    /// Epsilon the ledger holds already.
    spent_epsilon: f64,
    /// The partner's budget.
    budget_epsilon: f64,
    /// Updates that fit the budget, composed with the ledger.
    updates_allowed: u64,
    /// True when the count stopped at [`MAX_UPDATES`] (the budget allows at least that many).
    at_least: bool,
    /// Epsilon after the allowed updates (the ledger's spend when none fits).
    epsilon_after_allowed: f64,
    /// `[update] every`, seconds.
    every_secs: Option<u64>,
    /// `[update] on_new_data.min_partners`.
    min_partners: Option<u32>,
    /// Seconds two starts are at least apart.
    min_interval_secs: u64,
    /// The date the schedule is counted from (now), RFC 3339.
    from: String,
    /// The first update the budget refuses, RFC 3339: with `every` the date it
    /// is due; with `on_new_data` alone the earliest date it can start (every
    /// update triggered as soon as `min_interval` allows). `None` when
    /// `at_least`.
    runs_out: Option<String>,
    /// With both `every` and `on_new_data`: `runs_out` is the earliest date
    /// (data triggers), this the latest (`every` alone).
    runs_out_latest: Option<String>,
}

/// The count of updates `privacy cost --schedule` stops at.
const MAX_UPDATES: u64 = 100_000;

/// A run composed with what the partner's ledger already holds.
#[derive(Debug, Clone, Serialize)]
struct BudgetCheck {
    /// The ledger read (absent: nothing spent).
    ledger: Option<PathBuf>,
    /// Whether the ledger file exists (a missing ledger has spent nothing).
    ledger_exists: bool,
    /// Charged tasks in the ledger.
    ledger_entries: usize,
    /// Epsilon of everything the ledger holds.
    spent_epsilon: f64,
    /// Epsilon of this run alone.
    run_epsilon: f64,
    /// Epsilon of the ledger's charges composed with the run's (not a sum).
    total_epsilon: f64,
    /// The partner's budget, if its config has one.
    budget_epsilon: Option<f64>,
    /// Budget minus what is spent already.
    budget_left: Option<f64>,
    /// Budget minus the total after the run (negative: it does not fit).
    budget_left_after_run: Option<f64>,
    /// Whether the total stays within the budget.
    fits: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
struct WarningOutput {
    message: String,
    #[serde(flatten)]
    detail: UtilityWarning,
}

#[derive(Debug, Clone, Serialize)]
struct RunPlan {
    rounds: u32,
    /// Releases of the run: `rounds` for a gradient family; for a
    /// statistics family what it plans (a tree run: one per tree, or one per
    /// level), each costing `epsilon_per_round`.
    releases: u64,
    /// A statistics family (its plan is counted in releases, not steps).
    #[serde(skip)]
    statistics: bool,
    examples: usize,
    sampling_rate: f64,
    steps_per_round: u64,
    noise_multiplier: f64,
    clip_norm: f64,
    epsilon_per_round: f64,
}

fn choose(
    report: &Report,
    choice: Option<AccountantChoice>,
) -> Result<(f64, &'static str), String> {
    match choice {
        Some(AccountantChoice::Rdp) => Ok((report.rdp_epsilon, "rdp")),
        Some(AccountantChoice::Pld) => report.pld_epsilon.map(|e| (e, "pld")).ok_or_else(|| {
            "the PLD accountant has no figure for this composition (epsilon too large)".into()
        }),
        None => Ok((
            report.epsilon,
            match report.accountant {
                AccountantKind::Rdp => "rdp",
                AccountantKind::Pld => "pld",
            },
        )),
    }
}

/// Runs a privacy command.
pub fn run(command: PrivacyCommand) -> Result<(), String> {
    match command {
        PrivacyCommand::Cost(args) => cost(args),
        PrivacyCommand::Calibrate {
            epsilon,
            delta,
            sampling_rate,
            steps,
            json,
        } => {
            let z = fedprofile_privacy::calibrate::noise_multiplier(
                epsilon,
                delta,
                sampling_rate,
                steps,
            )
            .map_err(|e| e.to_string())?;
            let check = fedprofile_privacy::accountant::epsilon(
                &[Charge::subsampled_gaussian(sampling_rate, z, steps)
                    .map_err(|e| e.to_string())?],
                delta,
            )
            .map_err(|e| e.to_string())?;
            if json {
                say!(
                    "{}",
                    serde_json::json!({"noise_multiplier": z, "epsilon": check.epsilon, "delta": delta, "sampling_rate": sampling_rate, "steps": steps})
                );
            } else {
                say!(
                    "noise multiplier {z:.4} gives epsilon {:.4} at delta {delta} (q {sampling_rate}, {steps} steps)",
                    check.epsilon
                );
            }
            Ok(())
        }
        PrivacyCommand::Ledger(LedgerCommand::Verify { file, allow_empty }) => {
            let exists = file.exists();
            let verified = fedprofile_privacy::ledger::verify(&file).map_err(|e| e.to_string())?;
            if verified.entries.is_empty() {
                let what = if exists { "is empty" } else { "does not exist" };
                if !allow_empty {
                    return Err(format!(
                        "the ledger {} {what}: there is no charged task to verify (pass --allow-empty if no charge is expected yet)",
                        file.display()
                    ));
                }
                say!(
                    "{}: the ledger {what}: no charged tasks, nothing spent",
                    file.display()
                );
                return Ok(());
            }
            let spent = verified
                .entries
                .last()
                .map_or(0.0, |e| e.cumulative_epsilon);
            say!(
                "{}: intact, {} charged tasks, cumulative epsilon {spent:.4}, head {}",
                file.display(),
                verified.entries.len(),
                verified.head_hash
            );
            Ok(())
        }
        PrivacyCommand::Ledger(LedgerCommand::Show { file, json }) => {
            let verified = fedprofile_privacy::ledger::verify(&file).map_err(|e| e.to_string())?;
            if json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&verified.entries).map_err(|e| e.to_string())?
                );
                return Ok(());
            }
            say!(
                "{:<6} {:<8} {:>8} {:>8} {:>6} {:>7} {:>10} {:>12}  task",
                "line",
                "round",
                "q",
                "sigma",
                "C",
                "steps",
                "cost eps",
                "cumulative"
            );
            for (i, e) in verified.entries.iter().enumerate() {
                say!(
                    "{:<6} {:<8} {:>8.4} {:>8.4} {:>6.3} {:>7} {:>10.4} {:>12.4}  {}",
                    i + 1,
                    e.round,
                    e.q,
                    e.sigma,
                    e.clip_norm,
                    e.steps,
                    e.cost_epsilon,
                    e.cumulative_epsilon,
                    e.task_id
                );
            }
            Ok(())
        }
        PrivacyCommand::Report {
            ledger,
            budget_epsilon,
            config,
            out,
            json,
        } => report(&ledger, budget_epsilon, config.as_deref(), &out, json),
    }
}

fn cost(args: CostArgs) -> Result<(), String> {
    let (charges, delta, plan, budget, warnings) = match (&args.run, args.sampling_rate) {
        (Some(run), _) => {
            let config_path = args.config.as_deref().ok_or("--run needs --config")?;
            let run = run_charges(run, config_path, args.ledger.as_deref())?;
            let check = budget_check(&run)?;
            if args.schedule {
                return schedule_cost(&run, args.json, unix_now());
            }
            let warnings = run
                .warnings
                .iter()
                .map(|w| WarningOutput {
                    message: w.to_string(),
                    detail: w.clone(),
                })
                .collect();
            (
                run.charges,
                run.delta,
                Some(run.plan),
                Some(check),
                Some(warnings),
            )
        }
        (None, Some(q)) => {
            let (Some(z), Some(steps), Some(delta)) =
                (args.noise_multiplier, args.steps, args.delta)
            else {
                return Err("--sampling-rate needs --noise-multiplier, --steps and --delta".into());
            };
            let charge = Charge::subsampled_gaussian(q, z, steps).map_err(|e| e.to_string())?;
            (vec![charge], delta, None, None, None)
        }
        (None, None) => {
            return Err("give either --run RUN.toml --config CLIENT.toml, or --sampling-rate, --noise-multiplier, --steps and --delta".into());
        }
    };
    let report = Accountant::default()
        .epsilon(&charges, delta)
        .map_err(|e| e.to_string())?;
    let (epsilon, accountant) = choose(&report, args.accountant)?;
    let output = CostOutput {
        epsilon,
        accountant,
        delta,
        rdp_epsilon: report.rdp_epsilon,
        rdp_order: report.rdp_order,
        pld_epsilon: report.pld_epsilon,
        plan,
        budget,
        warnings,
        schedule: None,
    };
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&output).map_err(|e| e.to_string())?
        );
    } else {
        say!(
            "epsilon {epsilon:.4} at delta {delta} ({accountant}; rdp {:.4} at order {}, pld {})",
            report.rdp_epsilon,
            report.rdp_order,
            report
                .pld_epsilon
                .map_or("n/a".into(), |e| format!("{e:.4}"))
        );
        if let Some(p) = output.plan.as_ref().filter(|p| p.statistics) {
            say!(
                "plan: {} releases of local statistics over {} rounds ({} examples), sigma {:.4}, clip {}, {:.4} per release",
                p.releases,
                p.rounds,
                p.examples,
                p.noise_multiplier,
                p.clip_norm,
                p.epsilon_per_round
            );
        } else if let Some(p) = &output.plan {
            say!(
                "plan: {} rounds x {} steps, q {:.5} ({} examples), sigma {:.4}, clip {}, {:.4} per round",
                p.rounds,
                p.steps_per_round,
                p.sampling_rate,
                p.examples,
                p.noise_multiplier,
                p.clip_norm,
                p.epsilon_per_round
            );
        }
        if let Some(b) = &output.budget {
            print_budget(b);
        }
        for w in output.warnings.iter().flatten() {
            eprintln!("warning: {}", w.message);
        }
    }
    match &output.budget {
        Some(b) if b.fits == Some(false) => Err(does_not_fit(b, output.plan.as_ref())),
        _ => Ok(()),
    }
}

fn print_budget(b: &BudgetCheck) {
    match &b.ledger {
        Some(path) if !b.ledger_exists => say!(
            "ledger {} does not exist yet: nothing spent so far",
            path.display()
        ),
        Some(path) => say!(
            "ledger {}: {} charged tasks, spent so far epsilon {:.4}",
            path.display(),
            b.ledger_entries,
            b.spent_epsilon
        ),
        None => say!("no ledger ([privacy] section absent): nothing spent so far"),
    }
    say!(
        "this run alone: epsilon {:.4}; total after the run: epsilon {:.4} (the ledger's charges composed with the run's)",
        b.run_epsilon,
        b.total_epsilon
    );
    match (b.budget_epsilon, b.budget_left, b.budget_left_after_run) {
        (Some(budget), Some(left), Some(after)) => say!(
            "budget epsilon {budget}: {left:.4} left now, {after:.4} left after the run{}",
            if b.fits == Some(true) {
                ""
            } else {
                " (does not fit)"
            }
        ),
        _ => say!("no budget: the client config has no [privacy] section"),
    }
}

fn does_not_fit(b: &BudgetCheck, plan: Option<&RunPlan>) -> String {
    let rounds = plan.map_or(String::from("its"), |p| match p.statistics {
        true => format!("its {} releases over {}", p.releases, p.rounds),
        false => format!("its {}", p.rounds),
    });
    format!(
        "this run does not fit the budget: {rounds} rounds would bring epsilon to {:.4} above the budget {}; {:.4} spent so far ({} charged tasks in the ledger)",
        b.total_epsilon,
        b.budget_epsilon.unwrap_or(f64::NAN),
        b.spent_epsilon,
        b.ledger_entries
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `privacy cost --run … --schedule`: prints the schedule's plan; an error
/// when the run file has no schedule or the partner no budget.
fn schedule_cost(run: &PlannedRun, json: bool, now_unix: i64) -> Result<(), String> {
    let plan = schedule_plan(run, now_unix)?;
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    for line in schedule_lines(&plan) {
        say!("{line}");
    }
    Ok(())
}

/// The text of `privacy cost --schedule`.
fn schedule_lines(p: &SchedulePlan) -> Vec<String> {
    let when = match (p.every_secs, p.min_partners) {
        (Some(e), Some(m)) => format!(
            "every {} or once {m} partners' data changed (at least {} apart)",
            show_secs(e),
            show_secs(p.min_interval_secs)
        ),
        (Some(e), None) => format!("every {}", show_secs(e)),
        (None, Some(m)) => format!(
            "once {m} partners' data changed, at least {} apart",
            show_secs(p.min_interval_secs)
        ),
        (None, None) => String::from("never"),
    };
    let mut lines = vec![
        format!("schedule: an update {when}, counted from {}", p.from),
        format!(
            "epsilon per update {:.4}; spent so far {:.4} of the budget {}",
            p.epsilon_per_update, p.spent_epsilon, p.budget_epsilon
        ),
    ];
    let count = if p.at_least {
        format!("at least {}", p.updates_allowed)
    } else {
        p.updates_allowed.to_string()
    };
    lines.push(format!(
        "the budget allows {count} more updates (epsilon {:.4} after them)",
        p.epsilon_after_allowed
    ));
    match (&p.runs_out, &p.runs_out_latest, p.every_secs) {
        (None, _, _) => {}
        (Some(out), Some(latest), _) => lines.push(format!(
            "runs out: update {} is refused, at the earliest {out} (data triggers), at the latest {latest} (every)",
            p.updates_allowed + 1
        )),
        (Some(out), None, Some(_)) => lines.push(format!(
            "runs out: update {} (due {out}) is refused",
            p.updates_allowed + 1
        )),
        (Some(out), None, None) => lines.push(format!(
            "runs out: update {} is refused; it can start {out} at the earliest",
            p.updates_allowed + 1
        )),
    }
    lines
}

/// The run's `[update]` schedule over the partner's budget, counted from
/// `now_unix`. Update `k` (1, 2, …) is due at `now + k * every`; triggered by
/// data, it can start at the earliest at `now + (k - 1) * min_interval` (the
/// first as soon as the data changed).
fn schedule_plan(run: &PlannedRun, now_unix: i64) -> Result<SchedulePlan, String> {
    let Some(schedule) = &run.schedule else {
        return Err(
            "--schedule: the run file has no schedule ([update] every or on_new_data)".into(),
        );
    };
    let Some(budget) = run.budget else {
        return Err(
            "--schedule: the client config has no [privacy] section, so no budget to run out"
                .into(),
        );
    };
    let ledger = match &run.ledger {
        Some(path) => Some(Ledger::open(path.clone()).map_err(|e| e.to_string())?),
        None => None,
    };
    // `updates` copies of the run: the same charges, steps multiplied (one
    // group of the canonical composition, so the count is cheap to try).
    let epsilon_after = |updates: u64| -> Result<f64, String> {
        let charges: Vec<Charge> = fedprofile_privacy::accountant::grouped(&run.charges)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|_| updates > 0)
            .map(|c| Charge {
                steps: c.steps.saturating_mul(updates),
                ..c
            })
            .collect();
        match &ledger {
            Some(l) => l.epsilon_with(&charges, run.delta),
            None => Accountant::default()
                .epsilon(&charges, run.delta)
                .map(|r| r.epsilon),
        }
        .map_err(|e| e.to_string())
    };
    let spent = epsilon_after(0)?;
    let fits = |updates: u64| epsilon_after(updates).map(|e| e <= budget);
    // Largest n with fits(n): doubling, then bisection (epsilon grows with n).
    let (mut low, mut high) = (0_u64, 1_u64);
    let mut at_least = false;
    if spent <= budget {
        while fits(high)? {
            low = high;
            if high >= MAX_UPDATES {
                at_least = true;
                break;
            }
            high = (high * 2).min(MAX_UPDATES);
        }
        while !at_least && high - low > 1 {
            let mid = low + (high - low) / 2;
            if fits(mid)? {
                low = mid;
            } else {
                high = mid;
            }
        }
    }
    let per_update = Accountant::default()
        .epsilon(&run.charges, run.delta)
        .map_err(|e| e.to_string())?
        .epsilon;
    let refused = i64::try_from(low + 1).unwrap_or(i64::MAX);
    let at = |step: u64, k: i64| {
        rfc3339(now_unix.saturating_add(i64::try_from(step).unwrap_or(i64::MAX).saturating_mul(k)))
    };
    let every_date = schedule.every.map(|e| at(e.as_secs(), refused));
    let interval = schedule.min_interval.as_secs().max(1);
    let data_date = schedule.min_partners.map(|_| at(interval, refused - 1));
    let (runs_out, runs_out_latest) = match (data_date, every_date) {
        _ if at_least => (None, None),
        (Some(d), Some(e)) => (Some(d), Some(e)),
        (d, e) => (d.or(e), None),
    };
    Ok(SchedulePlan {
        epsilon_per_update: per_update,
        spent_epsilon: spent,
        budget_epsilon: budget,
        updates_allowed: low,
        at_least,
        epsilon_after_allowed: epsilon_after(low)?,
        every_secs: schedule.every.map(|e| e.as_secs()),
        min_partners: schedule.min_partners,
        min_interval_secs: interval,
        from: rfc3339(now_unix),
        runs_out,
        runs_out_latest,
    })
}

/// Composes the run's charges with what the partner's ledger holds, at the
/// run's delta (the budget's, when the partner has one).
fn budget_check(run: &PlannedRun) -> Result<BudgetCheck, String> {
    let ledger = match &run.ledger {
        Some(path) => Some(Ledger::open(path.clone()).map_err(|e| e.to_string())?),
        None => None,
    };
    let epsilon_of = |charges: &[Charge]| -> Result<f64, String> {
        match &ledger {
            Some(l) => l.epsilon_with(charges, run.delta),
            None => Accountant::default()
                .epsilon(charges, run.delta)
                .map(|r| r.epsilon),
        }
        .map_err(|e| e.to_string())
    };
    let spent = epsilon_of(&[])?;
    let total = epsilon_of(&run.charges)?;
    let run_epsilon = Accountant::default()
        .epsilon(&run.charges, run.delta)
        .map_err(|e| e.to_string())?
        .epsilon;
    Ok(BudgetCheck {
        ledger: run.ledger.clone(),
        ledger_exists: run.ledger.as_ref().is_some_and(|p| p.exists()),
        ledger_entries: ledger.as_ref().map_or(0, |l| l.entries().len()),
        spent_epsilon: spent,
        run_epsilon,
        total_epsilon: total,
        budget_epsilon: run.budget,
        budget_left: run.budget.map(|b| b - spent),
        budget_left_after_run: run.budget.map(|b| b - total),
        fits: run.budget.map(|b| total <= b),
    })
}

/// A run as this partner would execute it.
struct PlannedRun {
    charges: Vec<Charge>,
    delta: f64,
    plan: RunPlan,
    /// The partner's ledger (from --ledger or the config's [privacy] section).
    ledger: Option<PathBuf>,
    /// The partner's budget epsilon.
    budget: Option<f64>,
    warnings: Vec<UtilityWarning>,
    /// The run file's `[update]` schedule, if any.
    schedule: Option<fedprofile_config::run::ScheduleConfig>,
}

/// The per-round charges a run would make on this partner, exactly as its ledger
/// would record them.
fn run_charges(run: &Path, config: &Path, ledger: Option<&Path>) -> Result<PlannedRun, String> {
    let run = RunConfig::from_path(run).map_err(|e| e.to_string())?;
    let config = ClientConfig::from_path(config).map_err(|e| e.to_string())?;
    let PrivacyMode::Record(record) = run.privacy else {
        return Err(
            "this run file has no record-level DP ([privacy] mode = \"record\"): nothing is charged on the client".into(),
        );
    };
    let schema = fedprofile_data::Schema::from_path(&config.schema).map_err(|e| e.to_string())?;
    let examples = fedprofile_data::load_split(&schema, &config.data_dir, &config.train_split)
        .map_err(|e| e.to_string())?
        .dataset
        .len();
    let mut task = RecordDpTask {
        clip_norm: record.clip_norm,
        noise_multiplier: match record.noise {
            RecordNoise::Multiplier(z) => Some(z),
            RecordNoise::TargetEpsilon(_) => None,
        },
        target_epsilon: match record.noise {
            RecordNoise::TargetEpsilon(e) => Some(e),
            RecordNoise::Multiplier(_) => None,
        },
        delta: record.delta,
        planned_rounds: run.rounds,
    };
    // The ledger accounts at the budget's delta when the partner has one.
    let delta = config.privacy.as_ref().map_or(record.delta, |p| p.delta);
    // A statistics family (k-means): one Gaussian release of all rows' sums
    // and counts per round (q 1, one step); a gradient family: DP-SGD steps.
    let mut warnings = Vec::new();
    // Releases of the run: one per round, or what a statistics family with
    // several exchanges per round (a tree per round, a release per level) plans.
    let mut releases = u64::from(run.rounds);
    let (charge, sampling_rate, noise_multiplier) = if !run.model.ops().is_gradient_trained() {
        let model = initial_model(&schema, &run)?;
        releases = model.ops().planned_releases(&model, run.rounds);
        task.planned_rounds = u32::try_from(releases).unwrap_or(u32::MAX);
        let plan = crate::privacy::plan_statistics(&model, &task, &mut HashMap::new())
            .map_err(|e| e.to_string())?;
        (plan.charge, 1.0, plan.noise_multiplier)
    } else {
        let plan = crate::privacy::plan(
            &task,
            examples,
            run.batch_size as usize,
            run.local_epochs as usize,
            run.learning_rate,
            &mut HashMap::new(),
        )
        .map_err(|e| e.to_string())?;
        let q = plan.params.sampling_rate();
        warnings = fedprofile_privacy::assess_dp_sgd(
            examples,
            run.batch_size as usize,
            q,
            plan.charge.sigma,
            parameter_count(&schema, run.model),
        );
        (plan.charge, q, plan.charge.sigma)
    };
    let per_round = Accountant::default()
        .epsilon(&[charge], delta)
        .map_err(|e| e.to_string())?
        .epsilon;
    let summary = RunPlan {
        rounds: run.rounds,
        releases,
        statistics: !run.model.ops().is_gradient_trained(),
        examples,
        sampling_rate,
        steps_per_round: charge.steps,
        noise_multiplier,
        clip_norm: record.clip_norm,
        epsilon_per_round: per_round,
    };
    Ok(PlannedRun {
        charges: vec![charge; usize::try_from(releases).unwrap_or(usize::MAX)],
        delta,
        plan: summary,
        ledger: ledger
            .map(Path::to_path_buf)
            .or_else(|| config.privacy.as_ref().map(|p| p.ledger.clone())),
        budget: config.privacy.as_ref().map(|p| p.epsilon),
        warnings,
        schedule: run.update.and_then(|u| u.schedule),
    })
}

/// The run's starting model for this partner's schema, as the coordinator
/// makes it under record-level DP (what a statistics family's releases are
/// planned against).
fn initial_model(
    schema: &fedprofile_data::Schema,
    run: &RunConfig,
) -> Result<fedprofile_learning::AnyModel, String> {
    let family = run.model.ops();
    let classes = schema.label_classes().map_or(0, <[String]>::len);
    let outputs = family.run_outputs(classes, run.clusters as usize);
    let template = schema.feature_template();
    let settings = fedprofile_learning::ModelSettings {
        numeric_label: schema.label_kind() == Some(fedprofile_data::LabelKind::Numeric),
        trees: run.trees,
        data_free: Some(template.binary_entries()),
    };
    run.model
        .initial_for(template.dim(), outputs, 0, &settings)
        .map_err(|e| e.to_string())
}

/// Parameters of a gradient-trained model on this schema: the family's
/// parameters per output row for the encoded features, times its outputs
/// (the classes of a multi-class label, 1 otherwise).
fn parameter_count(
    schema: &fedprofile_data::Schema,
    model: fedprofile_learning::ModelFamily,
) -> usize {
    let family = model.ops();
    let classes = schema.label_classes().map_or(1, <[String]>::len).max(1);
    family.per_output(schema.feature_template().dim()) * family.outputs(classes)
}

fn report(
    ledger: &Path,
    budget_epsilon: Option<f64>,
    config: Option<&Path>,
    out: &Path,
    json: bool,
) -> Result<(), String> {
    let verified = fedprofile_privacy::ledger::verify(ledger).map_err(|e| e.to_string())?;
    let budget = match (budget_epsilon, config) {
        (Some(b), _) => Some(b),
        (None, Some(c)) => ClientConfig::from_path(c)
            .map_err(|e| e.to_string())?
            .privacy
            .map(|p| p.epsilon),
        (None, None) => None,
    };
    let mut points: Vec<fedprofile_plot::EpsilonPoint> = Vec::new();
    let mut previous = 0.0;
    for e in &verified.entries {
        points.push(fedprofile_plot::EpsilonPoint {
            round: e.round,
            epsilon_spent: e.cumulative_epsilon - previous,
            cumulative: e.cumulative_epsilon,
        });
        previous = e.cumulative_epsilon;
    }
    if points.is_empty() {
        return Err(format!(
            "{}: the ledger holds no charges yet",
            ledger.display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create '{}': {e}", out.display()))?;
    let mut csv = String::from("round,task_id,epsilon_spent,cumulative_epsilon\n");
    for (p, e) in points.iter().zip(&verified.entries) {
        csv.push_str(&format!(
            "{},{},{:.6},{:.6}\n",
            p.round, e.task_id, p.epsilon_spent, p.cumulative
        ));
    }
    let csv_path = out.join("rounds.csv");
    std::fs::write(&csv_path, csv)
        .map_err(|e| format!("cannot write '{}': {e}", csv_path.display()))?;
    let png = out.join("epsilon.png");
    let title = format!("cumulative privacy loss ({})", ledger.display());
    fedprofile_plot::plot_cumulative_epsilon(&points, budget, &title, &png)
        .map_err(|e| e.to_string())?;
    if json {
        let rows: Vec<_> = points
            .iter()
            .map(|p| serde_json::json!({"round": p.round, "epsilon_spent": p.epsilon_spent, "cumulative_epsilon": p.cumulative}))
            .collect();
        say!(
            "{}",
            serde_json::json!({"rounds": rows, "budget_epsilon": budget, "plot": png})
        );
    } else {
        say!(
            "{:<8} {:>14} {:>18}",
            "round",
            "epsilon spent",
            "cumulative epsilon"
        );
        for p in &points {
            say!(
                "{:<8} {:>14.4} {:>18.4}",
                p.round,
                p.epsilon_spent,
                p.cumulative
            );
        }
        if let Some(b) = budget {
            say!("budget epsilon {b}: {:.1} % used", 100.0 * previous / b);
        }
        say!("plot: {}  table: {}", png.display(), csv_path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedprofile_config::run::ScheduleConfig;
    use std::time::Duration;

    /// 2026-12-01T00:00:00Z.
    const DEC_1: i64 = 1_796_083_200;

    fn planned(budget: Option<f64>, schedule: Option<ScheduleConfig>) -> PlannedRun {
        // 5 rounds of DP-SGD, q 0.01, sigma 1.1, 100 steps a round.
        let charge = Charge::subsampled_gaussian(0.01, 1.1, 100).unwrap();
        PlannedRun {
            charges: vec![charge; 5],
            delta: 1e-5,
            plan: RunPlan {
                rounds: 5,
                releases: 5,
                statistics: false,
                examples: 1000,
                sampling_rate: 0.01,
                steps_per_round: 100,
                noise_multiplier: 1.1,
                clip_norm: 1.0,
                epsilon_per_round: 0.0,
            },
            ledger: None,
            budget,
            warnings: Vec::new(),
            schedule,
        }
    }

    fn every(hours: u64) -> ScheduleConfig {
        ScheduleConfig {
            every: Some(Duration::from_secs(hours * 3600)),
            min_partners: None,
            min_interval: Duration::from_secs(hours * 3600),
        }
    }

    fn epsilon(charge_steps: u64) -> f64 {
        Accountant::default()
            .epsilon(
                &[Charge::subsampled_gaussian(0.01, 1.1, charge_steps).unwrap()],
                1e-5,
            )
            .unwrap()
            .epsilon
    }

    #[test]
    fn every_24h_counts_updates_and_the_day_the_budget_runs_out() {
        let plan = schedule_plan(&planned(Some(2.0), Some(every(24))), DEC_1).unwrap();
        assert_eq!(plan.updates_allowed, 3, "{plan:?}");
        assert!(!plan.at_least);
        // The count is the largest that fits: 3 updates (1500 steps) fit, 4 do not.
        assert!(epsilon(1500) <= 2.0 && epsilon(2000) > 2.0);
        assert_eq!(plan.epsilon_per_update, epsilon(500));
        assert_eq!(plan.epsilon_after_allowed, epsilon(1500));
        assert_eq!(format!("{:.4}", plan.epsilon_per_update), "1.0826");
        assert_eq!(format!("{:.4}", plan.epsilon_after_allowed), "1.8609");
        assert_eq!(plan.spent_epsilon, 0.0);
        // Update 4 is due 4 days after Dec 1.
        assert_eq!(plan.from, "2026-12-01T00:00:00Z");
        assert_eq!(plan.runs_out.as_deref(), Some("2026-12-05T00:00:00Z"));
        assert_eq!(plan.runs_out_latest, None);
        let lines = schedule_lines(&plan);
        assert_eq!(
            lines[0],
            "schedule: an update every 1d, counted from 2026-12-01T00:00:00Z"
        );
        assert_eq!(
            lines[3],
            "runs out: update 4 (due 2026-12-05T00:00:00Z) is refused"
        );
    }

    #[test]
    fn a_data_trigger_runs_out_at_the_earliest_after_min_interval_steps() {
        let schedule = ScheduleConfig {
            every: None,
            min_partners: Some(2),
            min_interval: Duration::from_secs(3600),
        };
        let plan = schedule_plan(&planned(Some(2.0), Some(schedule.clone())), DEC_1).unwrap();
        assert_eq!(plan.updates_allowed, 3);
        // Updates 1..3 start at 0 h, 1 h, 2 h at the earliest; the 4th at 3 h.
        assert_eq!(plan.runs_out.as_deref(), Some("2026-12-01T03:00:00Z"));
        let both = ScheduleConfig {
            every: Some(Duration::from_secs(86_400)),
            ..schedule
        };
        let plan = schedule_plan(&planned(Some(2.0), Some(both)), DEC_1).unwrap();
        assert_eq!(plan.runs_out.as_deref(), Some("2026-12-01T03:00:00Z"));
        assert_eq!(
            plan.runs_out_latest.as_deref(),
            Some("2026-12-05T00:00:00Z")
        );
    }

    #[test]
    fn the_ledger_s_spend_is_composed_before_counting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut ledger = Ledger::open(path.clone()).unwrap();
        // One earlier update already spent.
        for round in 1..=5 {
            ledger
                .append(fedprofile_privacy::ledger::ChargeRecord {
                    run_id: "earlier".into(),
                    round,
                    task_id: format!("earlier-{round}"),
                    charge: Charge::subsampled_gaussian(0.01, 1.1, 100).unwrap(),
                    clip_norm: 1.0,
                    delta: 1e-5,
                })
                .unwrap();
        }
        let mut run = planned(Some(2.0), Some(every(24)));
        run.ledger = Some(path);
        let plan = schedule_plan(&run, DEC_1).unwrap();
        assert_eq!(plan.spent_epsilon, epsilon(500));
        assert_eq!(plan.updates_allowed, 2);
        assert_eq!(plan.runs_out.as_deref(), Some("2026-12-04T00:00:00Z"));
    }

    #[test]
    fn a_budget_already_too_small_allows_no_update_and_runs_out_at_the_first() {
        let plan = schedule_plan(&planned(Some(0.5), Some(every(24))), DEC_1).unwrap();
        assert_eq!(plan.updates_allowed, 0);
        assert_eq!(plan.epsilon_after_allowed, 0.0);
        assert_eq!(plan.runs_out.as_deref(), Some("2026-12-02T00:00:00Z"));
    }

    #[test]
    fn no_schedule_or_no_budget_is_one_sentence() {
        let e = schedule_plan(&planned(Some(1.0), None), DEC_1).unwrap_err();
        assert!(e.contains("no schedule"), "{e}");
        let e = schedule_plan(&planned(None, Some(every(24))), DEC_1).unwrap_err();
        assert!(e.contains("no budget"), "{e}");
    }
}
