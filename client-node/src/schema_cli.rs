//! `fedprofile-client schema …`: start a schema from a partner's exports (`infer`),
//! combine the partners' schemas into the federation's (`merge`, schema files only)
//! and compare a schema with a partner's data (`check`). None of them contacts
//! anybody; the logic lives in `fedprofile_data::infer`.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use fedprofile_data::infer::{self, InferOptions, LabelSpec};
use fedprofile_data::{SPLIT_PLACEHOLDER, Schema};

use crate::privacy_cli::print_line;

/// Schema commands.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Write a commented schema.toml from this partner's exports (read once, streaming).
    ///
    /// Example: fedprofile-client schema infer --source accounts=data/train/accounts.csv --source services=data/train/services.csv --key customer_id --label churn --positive yes --out schema.toml
    Infer(InferArgs),
    /// Combine the partners' inferred schemas into one federation schema (reads only
    /// the schema files).
    ///
    /// Example: fedprofile-client schema merge a.toml b.toml c.toml --out federation.toml
    Merge {
        /// The partners' schema files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Compare a schema with this partner's data: values outside vocabularies, type
    /// differences, undeclared header columns. Exits 1 only on blocking problems (a
    /// missing file or header column, or a split `run` would refuse).
    ///
    /// Example: fedprofile-client schema check --schema federation.toml --data-dir data --split train
    Check {
        /// The schema to check.
        #[arg(long)]
        schema: PathBuf,
        /// The partner's data folder (the schema's source paths are relative to it).
        #[arg(long)]
        data_dir: PathBuf,
        /// Split to check.
        #[arg(long, default_value = "train")]
        split: String,
        /// Values held by fewer users are treated as rare when guessing types.
        #[arg(long, default_value_t = 10)]
        min_count: u64,
    },
}

/// Arguments of `schema infer`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("training_target").args(["label", "target", "class"])))]
pub struct InferArgs {
    /// A source export as NAME=PATH (repeat for several sources, fused on --key). A
    /// file in a folder named like --split is written as `{split}/<file>`.
    #[arg(long = "source", value_name = "NAME=PATH", required = true)]
    sources: Vec<String>,
    /// The join key column (in every source).
    #[arg(long)]
    key: String,
    /// A binary label column.
    #[arg(long)]
    label: Option<String>,
    /// The positive value of --label (default: yes, true, y, t or 1, whichever occurs).
    #[arg(long, requires = "label")]
    positive: Option<String>,
    /// A numeric regression target column.
    #[arg(long)]
    target: Option<String>,
    /// A multi-class label column.
    #[arg(long)]
    class: Option<String>,
    /// Values held by fewer users are not written (rare values would reveal users).
    #[arg(long, default_value_t = 10)]
    min_count: u64,
    /// More common values than this make a text column free text (ignored).
    #[arg(long, default_value_t = 100)]
    max_categories: usize,
    /// The split the exports belong to.
    #[arg(long, default_value = "train")]
    split: String,
    /// Do not write min/max bounds on numeric columns (by default: the observed range
    /// rounded outward to 2 significant digits; cells outside are clipped).
    #[arg(long)]
    no_bounds: bool,
    /// Output file (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn write_or_print(text: &str, out: Option<&Path>) -> Result<(), String> {
    match out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("{}: cannot write: {e}", path.display()))
        }
        None => {
            print_line(text.trim_end());
            Ok(())
        }
    }
}

/// Runs a schema command; the error is one sentence for stderr.
pub fn run(command: SchemaCommand) -> Result<(), String> {
    match command {
        SchemaCommand::Infer(args) => infer_cmd(args),
        SchemaCommand::Merge { files, out } => {
            let mut schemas = Vec::with_capacity(files.len());
            for f in &files {
                let schema = Schema::from_path(f).map_err(|e| e.to_string())?;
                schemas.push((f.display().to_string(), schema));
            }
            let draft = infer::merge_schemas(&schemas).map_err(|e| e.to_string())?;
            let origin = out
                .as_ref()
                .map_or_else(|| "merged schema".to_owned(), |p| p.display().to_string());
            draft.to_schema(&origin).map_err(|e| e.to_string())?;
            write_or_print(&draft.to_toml(), out.as_deref())?;
            if let Some(path) = &out {
                eprintln!(
                    "wrote {} (merged from {} schemas)",
                    path.display(),
                    files.len()
                );
            }
            Ok(())
        }
        SchemaCommand::Check {
            schema,
            data_dir,
            split,
            min_count,
        } => check_cmd(&schema, &data_dir, &split, min_count),
    }
}

fn infer_cmd(args: InferArgs) -> Result<(), String> {
    let label = match (args.label, args.target, args.class) {
        (Some(column), _, _) => Some(LabelSpec::Label {
            column,
            positive: args.positive,
        }),
        (_, Some(column), _) => Some(LabelSpec::Target(column)),
        (_, _, Some(column)) => Some(LabelSpec::Class(column)),
        _ => None,
    };
    let options = InferOptions {
        label,
        min_count: args.min_count.max(1),
        max_categories: args.max_categories,
        split: args.split,
        bounds: !args.no_bounds,
        ..InferOptions::new(&args.key)
    };
    let mut profiles = Vec::with_capacity(args.sources.len());
    let mut paths = Vec::with_capacity(args.sources.len());
    for spec in &args.sources {
        let (name, path) = spec
            .split_once('=')
            .filter(|(n, p)| !n.trim().is_empty() && !p.is_empty())
            .ok_or_else(|| format!("--source '{spec}': expected NAME=PATH"))?;
        let path = PathBuf::from(path);
        let profile = infer::profile_file(name.trim(), &path, &options.key, options.min_count)
            .map_err(|e| e.to_string())?;
        profiles.push(profile);
        paths.push(path);
    }
    let path_refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let draft = infer::infer_schema(&profiles, &path_refs, &options).map_err(|e| e.to_string())?;
    let origin = args
        .out
        .as_ref()
        .map_or_else(|| "inferred schema".to_owned(), |p| p.display().to_string());
    let schema = draft.to_schema(&origin).map_err(|e| e.to_string())?;
    write_or_print(&draft.to_toml(), args.out.as_deref())?;
    if let Some(path) = &args.out {
        let features = schema.feature_template().columns.len();
        eprintln!(
            "wrote {}: {} source(s), {features} feature column(s); review it before sharing",
            path.display(),
            schema.sources().len()
        );
    }
    Ok(())
}

fn check_cmd(
    schema_path: &Path,
    data_dir: &Path,
    split: &str,
    min_count: u64,
) -> Result<(), String> {
    let schema = Schema::from_path(schema_path).map_err(|e| e.to_string())?;
    let options = InferOptions {
        min_count: min_count.max(1),
        split: split.to_owned(),
        ..InferOptions::new(schema.key())
    };
    // Loaded first: the split name is validated before it becomes part of a path.
    let loaded = fedprofile_data::load_split(&schema, data_dir, split);
    if let Err(e @ fedprofile_data::DataError::InvalidSplit { .. }) = &loaded {
        return Err(e.to_string());
    }
    let mut lines = Vec::new();
    for source in schema.sources() {
        let path = data_dir.join(source.path.replace(SPLIT_PLACEHOLDER, split));
        let profile =
            match infer::profile_file(&source.name, &path, schema.key(), options.min_count) {
                Ok(p) => p,
                // Reported below by loading the split (the blocking verdict).
                Err(_) => continue,
            };
        for f in infer::check_source(source, &profile, &options) {
            lines.push(format!("{}: {}", profile.file, f.message));
        }
    }
    for line in &lines {
        print_line(&format!("note: {line}"));
    }
    let loaded = loaded.map_err(|e| e.to_string())?;
    let problems: Vec<String> = loaded.problems().iter().map(ToString::to_string).collect();
    if !problems.is_empty() {
        return Err(problems.join("\nerror: "));
    }
    print_line(&format!(
        "{}: split '{split}' of {} is usable: {} users, {} difference(s) noted, no blocking problem",
        schema_path.display(),
        data_dir.display(),
        loaded.report.users,
        lines.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use crate::cli::Cli;

    #[test]
    fn the_command_line_is_well_formed_and_label_options_exclude_each_other() {
        Cli::command().debug_assert();
        let infer = |extra: &[&str]| {
            let mut args = vec![
                "fedprofile-client",
                "schema",
                "infer",
                "--source",
                "a=a.csv",
                "--key",
                "id",
            ];
            args.extend(extra);
            Cli::try_parse_from(args)
        };
        assert!(infer(&["--label", "churn", "--positive", "yes"]).is_ok());
        assert!(infer(&["--target", "amount"]).is_ok());
        assert!(infer(&["--label", "churn", "--class", "plan"]).is_err());
        assert!(infer(&["--positive", "yes"]).is_err());
    }
}
