//! Coordination overhead per round, measured in-process over real mTLS on
//! loopback: the coordinator's engine and gRPC service with clients that answer
//! every task instantly (so the round time is the coordinator's own work: task
//! fan-out, message encoding, collection, validation, FedAvg, pooled evaluation).
//!
//! Run: `cargo bench -p fedprofile-e2e --bench round_overhead`

use std::time::Instant;

use fedprofile_coordinator::daemon;
use fedprofile_e2e::in_process::{client_names, client_tls, make_pki, serve_options};
use fedprofile_e2e::light::{open_session, serve_honestly};

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

async fn scenario(clients: usize, rounds: u32, dim: usize, clusters: Option<usize>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = client_names(clients);
    make_pki(dir.path(), "bench ca", &names);
    let model = match clusters {
        Some(k) => format!("model = \"kmeans\"\nclusters = {k}\n"),
        None => String::new(),
    };
    let params = clusters.map_or(dim + 1, |k| k * dim);
    let run_toml = format!(
        "[run]\nname = \"bench\"\nrounds = {rounds}\nseed = 1\n{model}\
         [clients]\nmin_per_round = {clients}\nmin_connected_to_start = {clients}\nstart_timeout_secs = 60\n\
         [round]\ndeadline_secs = 60\nmax_retries = 0\n"
    );
    let options = serve_options(dir.path(), run_toml);
    let listener = daemon::bind(&options).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(daemon::serve(options, listener, std::future::pending()));
    let mut handles = Vec::new();
    for n in &names {
        let session = open_session(port, client_tls(dir.path(), n))
            .await
            .expect("session");
        handles.push(tokio::spawn(serve_honestly(session, dim)));
    }
    let started = Instant::now();
    let outcome = server
        .await
        .expect("join")
        .expect("run")
        .expect("a finished run");
    let wall = started.elapsed();
    assert!(outcome.completed, "{:?}", outcome.failure);
    for h in handles {
        let _ = h.await;
    }
    // Skip the first round (connection warm-up).
    let rs = &outcome.rounds[1..];
    let train: Vec<f64> = rs.iter().map(|r| r.train_phase_ms).collect();
    let eval: Vec<f64> = rs.iter().map(|r| r.eval_phase_ms).collect();
    let total: Vec<f64> = rs.iter().map(|r| r.round_ms).collect();
    println!(
        "{:<8} | clients {clients:>4} | params {params:>5} | rounds {rounds} | first round {:.1} ms | train phase median {:.3} ms p90 {:.3} ms | eval phase median {:.3} ms p90 {:.3} ms | round median {:.3} ms p90 {:.3} ms | wall {:.2} s | peak rss {} KiB",
        clusters.map_or("logistic", |_| "k-means"),
        outcome.rounds[0].round_ms,
        percentile(&train, 0.5),
        percentile(&train, 0.9),
        percentile(&eval, 0.5),
        percentile(&eval, 0.9),
        percentile(&total, 0.5),
        percentile(&total, 0.9),
        wall.as_secs_f64(),
        fedprofile_coordinator::report::peak_rss_kib().unwrap_or(0),
    );
}

fn main() {
    fedprofile_protocol::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The Telco demo's model has 40 inputs (41 parameters).
    runtime.block_on(scenario(4, 200, 40, None));
    runtime.block_on(scenario(32, 50, 40, None));
    runtime.block_on(scenario(4, 50, 10_000, None));
    // The load test's shape: 200 mTLS clients, 5 rounds.
    runtime.block_on(scenario(200, 5, 40, None));
    // A k-means round (cluster sums and counts instead of deltas): the demo's
    // 4 segments, and 64 segments over 100 inputs.
    runtime.block_on(scenario(4, 200, 40, Some(4)));
    runtime.block_on(scenario(4, 50, 100, Some(64)));
}
