//! The fedprofile coordinator.
//!
//! - [`engine`]: the round engine, an explicit state machine over domain types;
//! - [`daemon`]: the long-lived process: run queue, persistence, resume;
//! - [`tls_reload`]: mutual TLS terminated here, certificates reloaded without a restart;
//! - [`service`]: the federation gRPC edge (sessions, identity from certificates);
//! - [`status`]: the edge's typed errors and their one map to gRPC codes;
//! - [`admin`] / [`operator`]: the operators' API and its command line;
//! - [`store`]: the SQLite database (runs, rounds, the model registry); [`models`]: what a run registers; [`audit`]: the hash-chained audit log;
//! - [`state`]: the two checked against each other at start (state identity);
//! - [`missing`]: who a run is waiting for and why (failed handshakes, absent partners);
//! - [`metrics`]: Prometheus metrics; [`report`]: outputs, plots, progress lines;
//! - [`config`]: coordinator config; [`certs`]: development CA and certificates;
//! - [`local`]: a whole federation on one machine (`local`);
//! - [`cli`]: the command line.
//!
//! The coordinator never links the raw-data pipeline: it sees counts, sums,
//! model updates and evaluation histograms, never rows.

pub mod admin;
pub mod audit;
pub mod certs;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod follow;
pub mod local;
pub mod metrics;
pub mod missing;
pub mod models;
pub mod operator;
pub mod report;
pub mod schedule;
pub mod service;
pub mod state;
pub mod status;
pub mod store;
pub mod tls_reload;
