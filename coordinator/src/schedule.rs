//! Update schedules and data triggers (see `docs/updates.md`, "Schedules and
//! triggers").
//!
//! An update run file with `every` and/or `on_new_data` in its `[update]`
//! section is not queued: it creates a *schedule* ([`create`]), kept in the
//! store so a restarted coordinator keeps it. The run manager calls [`tick`]
//! while it is idle (and between runs): a schedule whose rules say it is due
//! ([`due`]) queues one run of its file, in one transaction with the start.
//!
//! - `every`: due once `every` has passed since its last start (or its creation).
//! - `on_new_data`: due once at least `min_partners` partners' data
//!   fingerprints changed after its baseline (its creation, then each start).
//! - Never two runs of one target at once: nothing starts while a run of the
//!   same target is queued or running.
//! - Never two starts closer than the minimum interval.
//! - A scheduled run that a partner refused because its privacy budget would be
//!   exceeded stops the schedule with that reason ([`after_run`]), instead of
//!   starting again and being refused forever.

use fedprofile_config::run::RunConfig;

use crate::daemon::{Shared, make_run_id, now};
use crate::engine::RunOutcome;
use crate::store::{NewSchedule, ScheduleRow, ScheduleState, StoreError};

/// How often the idle run manager looks at the schedules.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why `schedule` should start a run now, or `None`. `changed` is how many
/// partners' data changed after its baseline; `busy`, whether a run of its
/// target is queued or running.
pub fn due(schedule: &ScheduleRow, now_unix: u64, changed: usize, busy: bool) -> Option<String> {
    if schedule.state != ScheduleState::Active || busy {
        return None;
    }
    if let Some(last) = schedule.last_started_unix
        && now_unix < last.saturating_add(schedule.min_interval_secs)
    {
        return None;
    }
    if let Some(every) = schedule.every_secs {
        let from = schedule.last_started_unix.unwrap_or(schedule.created_unix);
        if now_unix >= from.saturating_add(every) {
            return Some(format!("due: every {}", show_secs(every)));
        }
    }
    if let Some(min) = schedule.min_partners
        && changed >= min as usize
    {
        return Some(format!(
            "new data: {changed} partners' data changed (at least {min} asked)"
        ));
    }
    None
}

pub use fedprofile_config::run::show_duration_secs as show_secs;

/// Creates the schedule of a validated update run file with `every` and/or
/// `on_new_data`; audited as `schedule.create`.
pub fn create(
    shared: &Shared,
    run: &RunConfig,
    run_toml: &str,
    actor: &str,
) -> Result<ScheduleRow, String> {
    let (Some(update), Some(rules)) = (
        &run.update,
        run.update.as_ref().and_then(|u| u.schedule.as_ref()),
    ) else {
        return Err(format!("run '{}' has no schedule", run.name));
    };
    let id = format!("schedule-{}", make_run_id(&run.name));
    shared
        .store
        .insert_schedule(&NewSchedule {
            id: &id,
            name: &run.name,
            target: &update.target,
            run_toml,
            every_secs: rules.every.map(|d| d.as_secs()),
            min_partners: rules.min_partners,
            min_interval_secs: rules.min_interval.as_secs().max(1),
            now_unix: unix_now(),
        })
        .map_err(|e| e.to_string())?;
    let row = shared
        .store
        .schedule(&id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("schedule {id} vanished from the database"))?;
    shared.audit.note(
        actor,
        "schedule.create",
        None,
        &format!("{id}: {}", describe(&row)),
    );
    Ok(row)
}

/// The rules of a schedule in words.
pub fn describe(s: &ScheduleRow) -> String {
    let mut rules = Vec::new();
    if let Some(every) = s.every_secs {
        rules.push(format!("every {}", show_secs(every)));
    }
    if let Some(min) = s.min_partners {
        rules.push(format!("when {min} partners' data changed"));
    }
    format!(
        "updates '{}' {}, at most once per {}",
        s.target,
        rules.join(" or "),
        show_secs(s.min_interval_secs)
    )
}

/// Starts the runs of the schedules that are due at `now_unix`; returns the
/// ids of the runs queued.
pub fn tick(shared: &Shared, now_unix: u64) -> Result<Vec<String>, StoreError> {
    let schedules = shared.store.schedules()?;
    if !schedules.iter().any(|s| s.state == ScheduleState::Active) {
        return Ok(Vec::new());
    }
    let fingerprints = shared.store.fingerprints()?;
    let busy_targets: Vec<String> = shared
        .store
        .runs()?
        .into_iter()
        .filter(|r| !r.state.is_terminal())
        .filter_map(|r| {
            RunConfig::from_toml_str(&r.run_toml, std::path::Path::new("run"))
                .ok()
                .and_then(|c| c.update.map(|u| u.target))
        })
        .collect();
    let mut started = Vec::new();
    for s in schedules {
        let changed = fingerprints
            .iter()
            .filter(|f| f.changed_unix > s.baseline_unix)
            .count();
        let busy = busy_targets.contains(&s.target) || started_target(&started, &s);
        let Some(why) = due(&s, now_unix, changed, busy) else {
            continue;
        };
        let rounds = RunConfig::from_toml_str(&s.run_toml, std::path::Path::new("schedule"))
            .map_or(0, |c| c.rounds);
        let run_id = make_run_id(&s.name);
        shared
            .store
            .start_scheduled_run(&s.id, &run_id, rounds, &now(), now_unix)?;
        shared.audit.note(
            "coordinator",
            "schedule.start",
            Some(&run_id),
            &format!("{} started run {run_id} ({why})", s.id),
        );
        shared
            .metrics
            .count_scheduled(if why.starts_with("new data") {
                "new_data"
            } else {
                "every"
            });
        tracing::info!(schedule = %s.id, run_id = %run_id, "{why}");
        started.push((s.target.clone(), run_id));
    }
    Ok(started.into_iter().map(|(_, id)| id).collect())
}

fn started_target(started: &[(String, String)], s: &ScheduleRow) -> bool {
    started.iter().any(|(target, _)| *target == s.target)
}

/// After a run ends: a run started by a schedule that a partner refused
/// because its privacy budget would be exceeded stops that schedule, with the
/// partner and its reason (audited as `schedule.stop`).
pub fn after_run(shared: &Shared, outcome: &RunOutcome) -> Result<(), StoreError> {
    let Some((client, reason)) = outcome.budget_refusals.iter().next() else {
        return Ok(());
    };
    for s in shared.store.schedules()? {
        if s.state != ScheduleState::Active
            || s.last_run_id.as_deref() != Some(outcome.run_id.as_str())
        {
            continue;
        }
        let why = format!(
            "stopped: partner {client} refused run {} because its privacy budget would be exceeded ({reason})",
            outcome.run_id
        );
        if shared.store.stop_schedule(&s.id, &why)? {
            tracing::warn!(schedule = %s.id, "{why}");
            shared.audit.note(
                "coordinator",
                "schedule.stop",
                Some(&outcome.run_id),
                &format!("{}: {why}", s.id),
            );
            shared.metrics.count_scheduled("stopped_budget");
        }
    }
    Ok(())
}

/// Stops a schedule by hand (an operator), audited with the operator's identity.
pub fn stop(shared: &Shared, id: &str, actor: &str, reason: &str) -> Result<ScheduleRow, String> {
    let why = format!("stopped by {actor}: {reason}");
    let stopped = shared
        .store
        .stop_schedule(id, &why)
        .map_err(|e| e.to_string())?;
    let row = shared
        .store
        .schedule(id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("there is no schedule '{id}'"))?;
    if !stopped {
        return Err(format!(
            "schedule '{id}' is stopped already ({})",
            row.reason.as_deref().unwrap_or("no reason")
        ));
    }
    shared
        .audit
        .note(actor, "schedule.stop", None, &format!("{id}: {why}"));
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(every: Option<u64>, min_partners: Option<u32>, interval: u64) -> ScheduleRow {
        ScheduleRow {
            id: "s".into(),
            name: "n".into(),
            target: "churn".into(),
            run_toml: String::new(),
            every_secs: every,
            min_partners,
            min_interval_secs: interval,
            state: ScheduleState::Active,
            reason: None,
            created_unix: 1000,
            baseline_unix: 1000,
            last_started_unix: None,
            last_run_id: None,
            runs_started: 0,
        }
    }

    #[test]
    fn an_every_schedule_is_due_after_its_period_and_never_while_busy() {
        let s = schedule(Some(60), None, 60);
        assert_eq!(due(&s, 1059, 0, false), None);
        assert!(due(&s, 1060, 0, false).unwrap().contains("every 1m"));
        assert_eq!(due(&s, 1060, 0, true), None);
        let s = ScheduleRow {
            last_started_unix: Some(2000),
            ..s
        };
        assert_eq!(due(&s, 2059, 0, false), None);
        assert!(due(&s, 2060, 0, false).is_some());
    }

    #[test]
    fn a_data_trigger_needs_enough_partners_and_respects_the_interval() {
        let s = schedule(None, Some(2), 3600);
        assert_eq!(due(&s, 5000, 1, false), None);
        assert!(due(&s, 5000, 2, false).unwrap().contains("2 partners"));
        let s = ScheduleRow {
            last_started_unix: Some(4000),
            ..s
        };
        assert_eq!(due(&s, 7599, 3, false), None, "within the minimum interval");
        assert!(due(&s, 7600, 3, false).is_some());
        let stopped = ScheduleRow {
            state: ScheduleState::Stopped,
            ..s
        };
        assert_eq!(due(&stopped, 9000, 3, false), None);
    }

    #[test]
    fn durations_are_shown_shortest() {
        assert_eq!(show_secs(86_400), "1d");
        assert_eq!(show_secs(5400), "1h30m");
        assert_eq!(show_secs(2), "2s");
    }
}
