//! Error types of the learning crate, one per concern.
//!
//! Messages are lowercase, without trailing punctuation, and quote the offending
//! value, index or file, so that a single line in a log tells what went wrong.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Errors of the model math: bad inputs, bad hyperparameters, bad summaries.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LearningError {
    /// A parameter vector without even the intercept.
    #[error("model parameters are empty (expected at least the intercept)")]
    EmptyParams,
    /// A parameter that is NaN or infinite.
    #[error("model parameter {index} is not finite: {value}")]
    NonFiniteParam {
        /// Position in `[intercept, w_1..w_dim]`.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A parameter or update vector of the wrong length.
    #[error("got {got} parameters but the model has {expected}")]
    ParamCount {
        /// Length the model needs (`dim + 1`).
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// A feature matrix or row with the wrong number of columns.
    #[error("input has {got} feature columns but the model expects {expected}")]
    FeatureCount {
        /// The model's `dim()`.
        expected: usize,
        /// Columns received.
        got: usize,
    },
    /// Features and labels of different lengths.
    #[error("`x` has {rows} rows but `y` has {labels} labels")]
    RowMismatch {
        /// Rows of the feature matrix.
        rows: usize,
        /// Length of the label vector.
        labels: usize,
    },
    /// Scores and labels of different lengths.
    #[error("got {scores} scores but {labels} labels")]
    ScoreMismatch {
        /// Length of the score vector.
        scores: usize,
        /// Length of the label vector.
        labels: usize,
    },
    /// An operation that needs at least one example got none.
    #[error("no examples: the input has 0 rows")]
    EmptyInput,
    /// A feature value that is NaN or infinite.
    #[error("feature value at row {row}, column {column} is not finite: {value}")]
    NonFiniteFeature {
        /// Row of the feature matrix.
        row: usize,
        /// Column of the feature matrix.
        column: usize,
        /// The offending value.
        value: f64,
    },
    /// A label other than 0 or 1.
    #[error("label at row {index} is {value} (expected 0 or 1)")]
    InvalidLabel {
        /// Row of the label.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A score that is not a probability.
    #[error("score at index {index} is {value} (expected a probability in [0, 1])")]
    InvalidScore {
        /// Position of the score.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A hyperparameter outside its range.
    #[error("invalid training parameter `{field}` = {value} (must be {requirement})")]
    InvalidParam {
        /// Field name, e.g. `learning_rate`.
        field: &'static str,
        /// The offending value, formatted.
        value: String,
        /// The allowed range, e.g. `positive and finite`.
        requirement: &'static str,
    },
    /// A batch sampler returned a row index outside the data.
    #[error("batch sampler returned row {index} but there are only {examples} rows")]
    BatchIndex {
        /// The out-of-range row index.
        index: usize,
        /// Number of rows.
        examples: usize,
    },
    /// SGD produced a NaN or infinite parameter.
    #[error("training diverged at step {step}: parameter {index} became {value}")]
    Diverged {
        /// 1-based number of the step that broke the model.
        step: usize,
        /// Position of the first non-finite parameter.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// DP-SGD parameters checked for one data size used on another (the sampling
    /// rate, and so the privacy accounting, depends on the number of examples).
    #[error("dp-sgd parameters were checked for {checked} examples but the data has {got} rows")]
    DpExamplesMismatch {
        /// The `examples` passed to `DpSgdParams::check`.
        checked: usize,
        /// Rows of the training data.
        got: usize,
    },
    /// A DP-SGD gradient step was asked for more noisy releases than were accounted for.
    #[error("dp-sgd step refused: all {steps} accounted noisy steps have been taken")]
    DpStepsExhausted {
        /// The number of steps the privacy mechanism accounts for.
        steps: usize,
    },
    /// Two evaluation summaries with different histogram resolutions.
    #[error("cannot merge evaluation summaries with {left} and {right} score bins")]
    BinCountMismatch {
        /// Bins of the summary merged into.
        left: usize,
        /// Bins of the summary merged in.
        right: usize,
    },
    /// An evaluation summary whose counts contradict each other.
    #[error("evaluation summary is inconsistent: {reason}")]
    InconsistentSummary {
        /// What does not add up, with the numbers.
        reason: String,
    },
    /// A received binary evaluation whose histograms or counts do not add up
    /// (the sentence names the figures).
    #[error("{reason}")]
    EvaluationCounts {
        /// What does not add up, with the numbers.
        reason: String,
    },
    /// A regression target that is NaN or infinite.
    #[error("label at row {index} is not finite: {value}")]
    NonFiniteLabel {
        /// Row of the label.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A prediction that is NaN or infinite.
    #[error("prediction at index {index} is not finite: {value}")]
    NonFinitePrediction {
        /// Position of the prediction.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A multi-class label that is not a class index `0..classes`.
    #[error("label at row {index} is {value} (expected a class index in 0..{classes})")]
    InvalidClassLabel {
        /// Row of the label.
        index: usize,
        /// The offending value.
        value: f64,
        /// Number of classes.
        classes: usize,
    },
    /// A class probability outside `[0, 1]` (or NaN).
    #[error(
        "probability of class {class} at row {row} is {value} (expected a probability in [0, 1])"
    )]
    InvalidClassProbability {
        /// Row of the prediction matrix.
        row: usize,
        /// Column (class index).
        class: usize,
        /// The offending value.
        value: f64,
    },
    /// A flat parameter vector that cannot be cut into `rows` equal, non-empty rows
    /// (classes of a softmax model, centroids of a k-means model).
    #[error("got {got} parameters, which is not a positive multiple of {rows} {what}")]
    ParamRows {
        /// Length received.
        got: usize,
        /// Number of rows (classes or clusters).
        rows: usize,
        /// What the rows are, e.g. `classes`.
        what: &'static str,
    },
    /// Two multi-class summaries over different numbers of classes.
    #[error("cannot merge multiclass summaries over {left} and {right} classes")]
    ClassCountMismatch {
        /// Classes of the summary merged into.
        left: usize,
        /// Classes of the summary merged in.
        right: usize,
    },
    /// One client's contribution to a pooled computation was rejected.
    #[error("client {position}: {error}")]
    InClient {
        /// Index of the client's entry in the slice passed in.
        position: usize,
        /// Why it was rejected.
        error: Box<LearningError>,
    },
    /// Client k-means statistics whose shape differs from the model's.
    #[error("cluster stats field `{field}` has {got} values but the model needs {expected}")]
    ClusterStatsShape {
        /// `sums` or `counts`.
        field: &'static str,
        /// Length the model needs.
        expected: usize,
        /// Length received.
        got: usize,
    },
}

/// [`LearningError::InvalidParam`]: hyperparameter `field` is `value`, which
/// is not `requirement`.
pub(crate) fn invalid(
    field: &'static str,
    value: impl std::fmt::Display,
    requirement: &'static str,
) -> LearningError {
    LearningError::InvalidParam {
        field,
        value: value.to_string(),
        requirement,
    }
}

/// Hyperparameter `field` must be positive and finite.
pub(crate) fn check_positive(field: &'static str, value: f64) -> Result<(), LearningError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, value, "positive and finite"))
    }
}

/// Hyperparameter `field` must be non-negative and finite.
pub(crate) fn check_non_negative(field: &'static str, value: f64) -> Result<(), LearningError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(field, value, "non-negative and finite"))
    }
}

/// Count hyperparameter `field` must be positive.
pub(crate) fn check_count(field: &'static str, value: usize) -> Result<(), LearningError> {
    if value == 0 {
        Err(invalid(field, value, "positive"))
    } else {
        Ok(())
    }
}

/// Errors of server-side aggregation of client updates.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AggregationError {
    /// Nothing to aggregate.
    #[error("no updates to aggregate")]
    NoUpdates,
    /// An update whose length differs from the model's parameter count.
    #[error("update has {got} values, expected {expected}")]
    WrongDimension {
        /// Expected length (`dim + 1`).
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// An update containing NaN or infinity.
    #[error("update value at index {index} is not finite: {value}")]
    NonFiniteValue {
        /// Position in the delta.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A weight that is zero, negative or not finite.
    #[error("update weight must be positive and finite, got {weight}")]
    InvalidWeight {
        /// The offending weight.
        weight: f64,
    },
    /// The sum of the weights overflowed.
    #[error("total update weight is not finite: {total}")]
    NonFiniteTotalWeight {
        /// The overflowed sum.
        total: f64,
    },
    /// The aggregate overflowed.
    #[error("aggregated value at index {index} is not finite: {value}")]
    NonFiniteResult {
        /// Position in the aggregate.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// One update of a batch failed validation.
    #[error("update {position}: {error}")]
    InUpdate {
        /// Index of the update in the slice passed to the aggregator.
        position: usize,
        /// Why it was rejected.
        error: Box<AggregationError>,
    },
    /// A round's updates do not suit the strategy (e.g. too few for Krum).
    #[error(transparent)]
    Strategy(#[from] StrategyError),
}

/// Errors of a server strategy's configuration.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StrategyError {
    /// A strategy parameter outside its range.
    #[error("{field} must be {requirement}, got {value}")]
    InvalidParam {
        /// Field name with its section, e.g. `strategy.beta`.
        field: &'static str,
        /// The offending value, formatted.
        value: String,
        /// The allowed range, e.g. `in [0, 0.5)`.
        requirement: &'static str,
    },
    /// Fewer clients than the strategy needs.
    #[error("{strategy} needs at least {minimum} clients ({rule}), got {clients}")]
    TooFewClients {
        /// The strategy's name, e.g. `krum`.
        strategy: &'static str,
        /// The number of clients.
        clients: usize,
        /// The smallest admissible number of clients.
        minimum: usize,
        /// The rule with the parameters, e.g. `n >= 2f + 3 with byzantine = 1`.
        rule: String,
    },
    /// A strategy name this build does not know.
    #[error("unknown strategy '{name}' (expected one of {known})")]
    UnknownStrategy {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
}

/// Why a model file (or the model about to be written) is not valid.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModelFileProblem {
    /// The `format` field is missing or not `fedprofile-model`.
    #[error("format is {found} (expected \"fedprofile-model\")")]
    Format {
        /// The value found, as JSON (`<missing>` if absent).
        found: String,
    },
    /// The `version` field is missing or not one this build reads.
    #[error("format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The value found, as JSON (`<missing>` if absent).
        found: String,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The `model_type` is not one this build knows.
    #[error("model type '{found}' is not supported (expected 'logistic_regression')")]
    ModelType {
        /// The value found.
        found: String,
    },
    /// Weight count differs from the feature spec's dimension.
    #[error("{weights} weights for {dim} encoded features")]
    WeightCount {
        /// Number of weights.
        weights: usize,
        /// `features.dim()`.
        dim: usize,
    },
    /// A weight's name differs from the feature spec's entry name.
    #[error("weight {index} is named '{found}' but the feature spec calls it '{expected}'")]
    WeightName {
        /// Position of the weight.
        index: usize,
        /// Name in the file.
        found: String,
        /// Name from `FeatureSpec::entry_names`.
        expected: String,
    },
    /// A `version` that none of this build's readers knows (see
    /// `VersionedModelFile`, which reads several versions).
    #[error("format version {found} is not supported (this build reads versions {supported})")]
    UnsupportedVersions {
        /// The value found, as JSON (`<missing>` if absent).
        found: String,
        /// The versions this build reads, e.g. `1 and 2`.
        supported: String,
    },
    /// A `model_type` that the file's version does not define.
    #[error(
        "model type '{found}' is not supported in version {version} (expected one of {expected})"
    )]
    UnknownModelType {
        /// The value found.
        found: String,
        /// The file's format version.
        version: u32,
        /// The model types of that version, quoted and comma-separated.
        expected: String,
    },
    /// Parts of a version 2 file that do not line up (class names, centroids, ...).
    #[error("{0}")]
    Layout(String),
    /// A number that is NaN or infinite (or a negative standard deviation).
    #[error("{field} is invalid: {value}")]
    InvalidNumber {
        /// Which number, e.g. `weight 'tenure'`.
        field: String,
        /// The offending value.
        value: f64,
    },
}

/// Errors reading, writing or building the global model file.
#[derive(Debug, Error)]
pub enum ModelFileError {
    /// The file could not be read.
    #[error("cannot read model file '{}': {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file could not be written.
    #[error("cannot write model file '{}': {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not JSON, or not the layout of its declared version.
    #[error("cannot parse model file '{}': {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error, with line and column.
        source: serde_json::Error,
    },
    /// The file parses but fails validation (or would, when saving).
    #[error("invalid model file '{}': {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: ModelFileProblem,
    },
    /// A model file built in memory is not valid.
    #[error("invalid model: {0}")]
    Build(#[from] ModelFileProblem),
}
