//! The fedprofile client node.
//!
//! - [`node`]: loads and cleans the partner's data and answers tasks (no transport);
//! - [`session`]: dials the coordinator over mutual TLS and serves tasks;
//! - [`fingerprint`]: the data fingerprint a long-lived node sends (rows per split, a hash);
//! - [`score`]: scores the partner's users with a global model;
//! - [`config`]: the client configuration file;
//! - [`follow`]: following the champions (`[follow]`): model file, re-scoring, change report;
//! - [`schema_cli`]: `schema infer | merge | check` (starting a schema from the exports);
//! - [`cli`]: the command line (`run`, `check-data`, `score`, `profile`, `privacy`, `schema`).

pub mod cli;
pub mod config;
pub mod fingerprint;
pub mod follow;
pub mod node;
pub mod privacy;
pub mod privacy_cli;
pub mod profile;
pub mod schema_cli;
pub mod score;
pub mod session;
