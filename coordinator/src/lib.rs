//! The fedprofile coordinator.
//!
//! - [`engine`]: the round engine, an explicit state machine over domain types;
//! - [`service`]: the gRPC edge (sessions, identity from certificates);
//! - [`server`]: binding, TLS, one run from start to outputs;
//! - [`config`]: coordinator config and run files;
//! - [`certs`]: development CA and certificates;
//! - [`report`]: outputs and progress lines;
//! - [`cli`]: the command line.
//!
//! The coordinator never links the raw-data pipeline: it sees counts, sums,
//! model updates and evaluation histograms, never rows.

pub mod certs;
pub mod cli;
pub mod config;
pub mod engine;
pub mod report;
pub mod server;
pub mod service;
