//! Load: 200 client connections over mutual TLS join one run of 5 rounds, which
//! completes. (Lightweight protocol clients in this process; the coordinator is
//! the real service, in-process. Memory and round times: `cargo bench -p
//! fedprofile-e2e --bench round_overhead`.)

use std::time::Duration;

use fedprofile_coordinator::certs::{self, Role, Validity};
use fedprofile_coordinator::config::CoordinatorConfig;
use fedprofile_coordinator::daemon::{self, ServeOptions};
use fedprofile_e2e::light::{open_session, serve_honestly};
use fedprofile_protocol::tls::{self, TlsFiles};

const CLIENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mtls_clients_join_one_run_of_five_rounds() {
    fedprofile_protocol::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    certs::init_ca(dir.path(), "load ca", 1).unwrap();
    certs::issue(
        dir.path(),
        "coordinator",
        Role::Server,
        &[],
        Validity::Days(1),
    )
    .unwrap();
    let names: Vec<String> = (0..CLIENTS).map(|i| format!("client-{i:03}")).collect();
    for n in &names {
        certs::issue(dir.path(), n, Role::Client, &[], Validity::Days(1)).unwrap();
    }
    let run_toml = format!(
        "[run]\nname = \"load\"\nrounds = 5\nseed = 3\n\
         [clients]\nfraction_per_round = 1.0\nmin_per_round = {CLIENTS}\nmin_connected_to_start = {CLIENTS}\nstart_timeout_secs = 120\n\
         [round]\ndeadline_secs = 60\nmax_retries = 0\n"
    );
    let options = ServeOptions {
        config: CoordinatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_message_bytes: fedprofile_protocol::DEFAULT_MAX_MESSAGE_BYTES,
            tls: Some(TlsFiles {
                ca_cert: certs::ca_cert_path(dir.path()),
                cert: certs::cert_path(dir.path(), "coordinator"),
                key: certs::key_path(dir.path(), "coordinator"),
            }),
            crl: None,
            state_dir: dir.path().join("state"),
            metrics_listen: None,
        },
        queue_run: Some((dir.path().join("run.toml"), run_toml)),
        out_dir: None,
        exit_when_idle: true,
        insecure: false,
        addr_file: None,
        progress: false,
        accept_state_loss: false,
    };
    let listener = daemon::bind(&options).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(daemon::serve(options, listener, std::future::pending()));
    let mut handles = Vec::new();
    for n in &names {
        let files = TlsFiles {
            ca_cert: certs::ca_cert_path(dir.path()),
            cert: certs::cert_path(dir.path(), n),
            key: certs::key_path(dir.path(), n),
        };
        let tls = tls::client_config(&files, "coordinator").unwrap();
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
