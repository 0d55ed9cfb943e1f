//! Load: 200 client connections over mutual TLS join one run of 5 rounds, which
//! completes. (Lightweight protocol clients in this process; the coordinator is
//! the real service, in-process. Memory and round times: `cargo bench -p
//! fedprofile-e2e --bench round_overhead`.)

use std::time::Duration;

use fedprofile_coordinator::daemon;
use fedprofile_e2e::in_process::{client_names, client_tls, make_pki, serve_options};
use fedprofile_e2e::light::{open_session, serve_honestly};

const CLIENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mtls_clients_join_one_run_of_five_rounds() {
    fedprofile_protocol::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let names = client_names(CLIENTS);
    make_pki(dir.path(), "load ca", &names);
    let run_toml = format!(
        "[run]\nname = \"load\"\nrounds = 5\nseed = 3\n\
         [clients]\nfraction_per_round = 1.0\nmin_per_round = {CLIENTS}\nmin_connected_to_start = {CLIENTS}\nstart_timeout_secs = 120\n\
         [round]\ndeadline_secs = 60\nmax_retries = 0\n"
    );
    let options = serve_options(dir.path(), run_toml);
    let listener = daemon::bind(&options).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(daemon::serve(options, listener, std::future::pending()));
    let mut handles = Vec::new();
    for n in &names {
        let tls = client_tls(dir.path(), n);
        handles.push(tokio::spawn(async move {
            let session = open_session(port, tls).await.expect("session");
            serve_honestly(session, 40).await
        }));
    }
    let outcome = tokio::time::timeout(Duration::from_secs(600), server)
        .await
        .expect("the run finished in time")
        .unwrap()
        .unwrap()
        .expect("an outcome");
    assert!(outcome.completed, "{:?}", outcome.failure);
    assert_eq!(outcome.rounds.len(), 5);
    for r in &outcome.rounds {
        assert_eq!((r.selected, r.accepted), (CLIENTS, CLIENTS));
        assert_eq!(r.evaluated_clients, CLIENTS);
    }
    for h in handles {
        // Each answered 1 statistics + 5 training + 5 evaluation tasks.
        assert_eq!(h.await.unwrap(), 11);
    }
}
