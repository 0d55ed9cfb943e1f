//! Mutual TLS: the coordinator refuses clients without a certificate, with one
//! from another CA, or with an expired one, and accepts a valid one.

use std::process::Command;
use std::time::Duration;

use fedprofile_e2e::light::open_session;
use fedprofile_e2e::{Sandbox, assert_contains, bin, run_bounded, telco_run};
use fedprofile_protocol::tls::{self, TlsFiles};
use tonic::transport::ClientTlsConfig;

/// Opens a session with `tls` and returns the client id of the welcome, or the error.
async fn try_session(port: u16, tls: ClientTlsConfig) -> Result<String, String> {
    open_session(port, tls).await.map(|s| s.client_id)
}

fn files(sandbox: &Sandbox, folder: &str, name: &str) -> TlsFiles {
    TlsFiles {
        // Always trust the real federation CA for the server side.
        ca_cert: sandbox.path("certs/ca.pem"),
        cert: sandbox.path(&format!("{folder}/{name}.pem")),
        key: sandbox.path(&format!("{folder}/{name}.key")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_accepts_only_valid_certificates_of_the_federation_ca() {
    let sandbox = Sandbox::new();
    // Another CA with a client named like a real partner.
    sandbox.make_ca("other-ca", &["partner-a"]);
    // An expired certificate from the federation CA.
    sandbox.issue(&["--name", "partner-x", "--expired"]);
    let (_coordinator, port) = sandbox.start_idle_coordinator();

    // Valid: accepted, and the identity is the certificate's CN, not the claimed name.
    let ok = tls::client_config(&files(&sandbox, "certs", "partner-b"), "coordinator").unwrap();
    assert_eq!(try_session(port, ok).await, Ok("partner-b".to_string()));

    // No client certificate.
    let none =
        tls::client_config_without_identity(&sandbox.path("certs/ca.pem"), "coordinator").unwrap();
    let err = try_session(port, none).await.unwrap_err();
    assert!(!err.is_empty());

    // A certificate from another CA.
    let other =
        tls::client_config(&files(&sandbox, "other-ca", "partner-a"), "coordinator").unwrap();
    assert!(
        try_session(port, other).await.is_err(),
        "another CA's certificate was accepted"
    );

    // An expired certificate of the federation CA.
    let expired =
        tls::client_config_unchecked(&files(&sandbox, "certs", "partner-x"), "coordinator")
            .unwrap();
    // The client-side check refuses it before any handshake, with the dates.
    let err = tls::client_config(&files(&sandbox, "certs", "partner-x"), "coordinator")
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not valid now"), "{err}");
    assert!(
        try_session(port, expired).await.is_err(),
        "an expired certificate was accepted"
    );
}

/// partner-a's client node, one connection attempt to the coordinator on
/// `port`, must exit with status 1 and without a panic: its stderr.
fn partner_a_fails(sandbox: &Sandbox, port: u16) -> String {
    let config = sandbox.write_client("partner-a", "certs", "partner-a");
    let mut client = sandbox.start_client("partner-a", &config, port, &["--connect-attempts", "1"]);
    let status = client.wait(Duration::from_secs(60));
    let stderr = client.read_stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn client_with_an_expired_certificate_exits_with_a_clear_error() {
    let sandbox = Sandbox::new();
    sandbox.issue(&["--name", "partner-a", "--expired"]);
    let (_coordinator, port) = sandbox.start_idle_coordinator();
    let stderr = partner_a_fails(&sandbox, port);
    // Said before any connection, with the dates (was: "could not reach … transport error").
    assert_contains(
        &stderr,
        &["is not valid now: it is valid from", "partner-a.pem"],
    );
}

#[test]
fn client_whose_key_does_not_match_its_certificate_says_so() {
    let sandbox = Sandbox::new();
    let (_coordinator, port) = sandbox.start_idle_coordinator();
    // partner-a's certificate with partner-b's key.
    std::fs::copy(
        sandbox.path("certs/partner-b.key"),
        sandbox.path("certs/partner-a.key"),
    )
    .unwrap();
    let stderr = partner_a_fails(&sandbox, port);
    assert_contains(
        &stderr,
        &["does not belong to certificate", "partner-a.key"],
    );
    assert!(!stderr.contains("not a valid URL"), "{stderr}");
}

#[test]
fn insecure_mode_is_refused_off_loopback() {
    let sandbox = Sandbox::new();
    let (config, run) = sandbox.write_coordinator(&telco_run(1, 1, 1, 10.0));
    let out = run_bounded(
        Command::new(bin("fedprofile-coordinator"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--run")
            .arg(&run)
            .args(["--insecure", "--listen", "0.0.0.0:0"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--insecure is only allowed on a loopback address"),
        "{stderr}"
    );
}
