//! Statistics: every connected client reports its feature template, label
//! declaration and per-column counts and sums (never rows). The engine keeps
//! the template most clients share, rejects and excludes partners that disagree
//! or whose statistics are absurd, checks that the label fits the run's family,
//! builds the global feature spec (or takes a warm-start model's) and the
//! family's initial model, and commits round 0.

use super::*;

impl Run {
    /// Statistics: build the global feature spec from counts and sums.
    pub(super) async fn statistics(&mut self, attempt: u32) -> State {
        let clients = self.hub.connected();
        // The 0/1 counts behind profiles' reference row are not noised:
        // asked only in runs without differential privacy.
        let binary_counts = matches!(self.config.privacy, PrivacyMode::None);
        let tasks = self.send_tasks(0, attempt, 0, &clients, |_| TaskBody::Stats {
            binary_counts,
        });
        let mut collector = Collector::new(0, attempt, TaskKind::Stats, tasks, None);
        let gathered = self.collect(&mut collector).await;

        let reports: Vec<(String, StatsReport)> = gathered
            .accepted
            .into_iter()
            .filter_map(|(c, body)| match body {
                ResultBody::Stats(s) => Some((c, s)),
                _ => None,
            })
            .collect();
        let Some(declared) = Declared::most_shared(&reports) else {
            return self.retry_or_fail(attempt, "statistics: no client answered", |a| {
                State::Statistics { attempt: a }
            });
        };
        let mut agreeing = Vec::new();
        let mut names = Vec::new();
        let mut rejected = gathered.rejections;
        for (client, report) in reports {
            if declared.is_declared_by(&report) {
                agreeing.push(report);
                names.push(client);
            } else {
                let reason = RejectReason::Inconsistent(
                    "feature template differs from the federation's (check the schema version)"
                        .into(),
                );
                self.count_rejection(&client, "stats", &reason);
                self.exclude_for_statistics(&client, &reason);
                rejected.push((client, reason.to_string()));
            }
        }
        // One partner's absurd (but finite, self-consistent) statistics would
        // skew every partner's standardisation: compared with the others'.
        for (i, why) in stats_outliers(&names, &agreeing).into_iter().rev() {
            let client = names.remove(i);
            agreeing.remove(i);
            let reason = RejectReason::Inconsistent(why);
            self.count_rejection(&client, "stats", &reason);
            self.exclude_for_statistics(&client, &reason);
            rejected.push((client, reason.to_string()));
        }
        if agreeing.len() < self.config.min_per_round {
            let mut why = format!(
                "statistics: {} usable answers, {} needed",
                agreeing.len(),
                self.config.min_per_round
            );
            if !rejected.is_empty() {
                let list: Vec<String> = rejected.iter().map(|(c, r)| format!("{c}: {r}")).collect();
                why.push_str(&format!("; rejected: {}", list.join("; ")));
            }
            return self.retry_or_fail(attempt, &why, |a| State::Statistics { attempt: a });
        }
        self.state.reported_examples = names
            .iter()
            .cloned()
            .zip(agreeing.iter().map(|r| r.train_examples))
            .collect();
        let global = match self.starting_model(&declared, &agreeing) {
            Ok(global) => global,
            Err(e) => return State::Failed(e),
        };
        self.global = Some(global);
        let Declared {
            label,
            positive,
            kind: label_kind,
            classes,
            ..
        } = declared;
        self.state.target = (label_kind != LabelKindMsg::None).then_some((label, positive));
        self.state.classes = classes;
        if let Err(e) = self.commit(None, 0) {
            return State::Failed(e);
        }
        State::Training {
            round: 1,
            attempt: 0,
        }
    }

    /// The run's starting model: the family's initial model on the global
    /// feature spec, or the warm-start model (whose encoding is kept), once
    /// the clients' label fits the family.
    fn starting_model(
        &mut self,
        declared: &Declared,
        agreeing: &[StatsReport],
    ) -> Result<ModelSnapshot, RunError> {
        let family = self.config.model;
        let Declared {
            template,
            label,
            positive,
            kind,
            classes,
        } = declared;
        label_fits(family, *kind, label, classes).map_err(RunError::Schema)?;
        let outputs = family
            .ops()
            .run_outputs(classes.len(), self.config.clusters as usize);
        let mut spec = global_feature_spec(template, agreeing);
        let mut start = None;
        if let Some(path) = &self.config.warm_start {
            let expected = WarmStartTarget {
                family,
                label,
                positive,
                classes,
                outputs,
            };
            let (features, params) = fedprofile_learning::warm_start(path, template, &expected)
                .map_err(|why| RunError::WarmStart(why.to_string()))?;
            self.observer.note(&format!(
                "warm start from {} (its feature encoding is kept)",
                path.display()
            ));
            // How the earlier model goes on (the trees: as the privacy mode
            // says, so that the releases are the ones `privacy cost` plans).
            let params = family
                .ops()
                .warm_started(
                    params,
                    self.config.seed.unwrap_or(0),
                    &self.model_settings(*kind, &features),
                )
                .map_err(|e| RunError::WarmStart(e.to_string()))?;
            spec = features;
            start = Some(params);
        }
        let dim = spec.dim();
        self.observer.note(&format!(
            "feature statistics from {} clients ({} training examples): {} model inputs",
            agreeing.len(),
            agreeing.iter().map(|r| r.train_examples).sum::<u64>(),
            dim
        ));
        let params = match start {
            Some(params) => params,
            None => family
                .initial_for(
                    dim,
                    outputs,
                    self.config.seed.unwrap_or(0),
                    &self.model_settings(*kind, &spec),
                )
                .map_err(|e| RunError::InitialModel(e.to_string()))?
                .params()
                .clone(),
        };
        if self.config.update.is_some() {
            // An update run's warm start is its target's champion.
            self.state.champion = Some(CheckpointModel {
                model_type: family.name().to_string(),
                features: spec.clone(),
                params: params.to_vec(),
                outputs,
            });
        }
        Ok(ModelSnapshot {
            model_type: family.name().to_string(),
            features: spec,
            params,
            outputs,
        })
    }

    /// What the run says about its model beyond the family and the shape.
    fn model_settings(&self, label: LabelKindMsg, spec: &FeatureSpec) -> ModelSettings {
        ModelSettings {
            numeric_label: label == LabelKindMsg::Numeric,
            trees: self.config.trees,
            data_free: matches!(self.config.privacy, PrivacyMode::Record(_))
                .then(|| spec.binary_entries()),
        }
    }

    /// A partner whose feature statistics were rejected trains on data the
    /// federation's standardisation does not describe (a broken cell, another
    /// schema): it is left out of the rest of the run, and the run says so.
    pub(super) fn exclude_for_statistics(&mut self, client: &str, reason: &RejectReason) {
        if self.state.excluded.contains_key(client) {
            return;
        }
        self.observer.note(&format!(
            "{client} is left out of the rest of run {}: its feature statistics were rejected ({reason})",
            self.run_id
        ));
        self.state.excluded.insert(
            client.to_string(),
            format!("its feature statistics were rejected: {reason}"),
        );
    }
}

/// What the clients declare about their data: the feature template and the
/// label column.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Declared {
    template: FeatureSpec,
    label: String,
    positive: String,
    kind: LabelKindMsg,
    classes: Vec<String>,
}

impl Declared {
    fn of(r: &StatsReport) -> Declared {
        Declared {
            template: r.template.clone(),
            label: r.label_column.clone(),
            positive: r.label_positive.clone(),
            kind: r.label_kind,
            classes: r.label_classes.clone(),
        }
    }

    /// The declaration most clients share (of equals, the last in
    /// client-id order).
    fn most_shared(reports: &[(String, StatsReport)]) -> Option<Declared> {
        let mut counts: Vec<(Declared, usize)> = Vec::new();
        for (_, r) in reports {
            let d = Declared::of(r);
            match counts.iter_mut().find(|(t, _)| *t == d) {
                Some((_, n)) => *n += 1,
                None => counts.push((d, 1)),
            }
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map(|(d, _)| d)
    }

    /// Whether `report` declares the same.
    fn is_declared_by(&self, report: &StatsReport) -> bool {
        report.template == self.template
            && report.label_column == self.label
            && report.label_positive == self.positive
            && report.label_kind == self.kind
            && report.label_classes == self.classes
    }
}

/// Checks that the clients' label column is what the run's model family trains on.
fn label_fits(
    family: ModelFamily,
    kind: LabelKindMsg,
    column: &str,
    classes: &[String],
) -> Result<(), String> {
    let (need, needs) = match family.label_need() {
        LabelNeed::Binary => (
            LabelKindMsg::Binary,
            LabelKindMsg::Binary.describe().to_string(),
        ),
        LabelNeed::Numeric => (
            LabelKindMsg::Numeric,
            LabelKindMsg::Numeric.describe().to_string(),
        ),
        LabelNeed::Classes => (
            LabelKindMsg::Classes,
            LabelKindMsg::Classes.describe().to_string(),
        ),
        LabelNeed::Supervised => (
            match kind {
                LabelKindMsg::Numeric => LabelKindMsg::Numeric,
                _ => LabelKindMsg::Binary,
            },
            format!(
                "{} or {}",
                LabelKindMsg::Binary.describe(),
                LabelKindMsg::Numeric.describe()
            ),
        ),
        LabelNeed::None => return Ok(()),
    };
    if kind != need {
        let has = match kind {
            LabelKindMsg::None => "no label column".to_string(),
            other => format!("'{column}' as {}", other.describe()),
        };
        return Err(format!(
            "the run trains a {family} model, which needs {needs} in the clients' schema; their schema declares {has}"
        ));
    }
    if need == LabelKindMsg::Classes && classes.len() < 2 {
        return Err(format!(
            "the clients' class column '{column}' declares {} classes, at least 2 are needed",
            classes.len()
        ));
    }
    Ok(())
}
