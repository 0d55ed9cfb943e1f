//! Prints the quality report of one split.
//!
//! `cargo run -p fedprofile-data --example quality_report -- deploy/demo/schema.toml deploy/demo/data/partner-a train [--json]`

use std::path::Path;
use std::process::ExitCode;

use fedprofile_data::{Schema, load_split};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    let [schema, dir, split] = rest.as_slice() else {
        eprintln!("usage: quality_report <schema.toml> <partner data dir> <split> [--json]");
        return ExitCode::from(2);
    };
    let result = Schema::from_path(Path::new(schema.as_str()))
        .and_then(|schema| load_split(&schema, Path::new(dir.as_str()), split));
    match result {
        Ok(loaded) if json => match serde_json::to_string_pretty(&loaded.report) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot serialize report: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(loaded) => {
            print!("{}", loaded.report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
