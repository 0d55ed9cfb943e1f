//! The coordinator in this process (its daemon over real mTLS on 127.0.0.1:0),
//! for tests and benchmarks whose clients are the lightweight ones of
//! [`crate::light`]: a development CA with a coordinator certificate and one
//! client certificate a name, and the daemon's options for one queued run.

use std::path::Path;

use fedprofile_coordinator::certs::{self, Role, Validity};
use fedprofile_coordinator::config::CoordinatorConfig;
use fedprofile_coordinator::daemon::ServeOptions;
use fedprofile_protocol::tls::{self, TlsFiles};
use tonic::transport::ClientTlsConfig;

/// `count` client names, `client-000`, `client-001`, …
pub fn client_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("client-{i:03}")).collect()
}

/// A development CA in `dir` (named `ca_name`) with a coordinator certificate
/// and one client certificate for each of `clients`, valid one day; panics
/// when a certificate cannot be made.
pub fn make_pki(dir: &Path, ca_name: &str, clients: &[String]) {
    certs::init_ca(dir, ca_name, 1).expect("development CA");
    let issue = |name: &str, role| {
        certs::issue(dir, name, role, &[], Validity::Days(1))
            .unwrap_or_else(|e| panic!("certificate for {name}: {e}"))
    };
    issue("coordinator", Role::Server);
    for name in clients {
        issue(name, Role::Client);
    }
}

/// The daemon's options: listen on 127.0.0.1:0 with the CA of `dir` (see
/// [`make_pki`]), state in `<dir>/state`, run `run_toml` once and exit when idle.
pub fn serve_options(dir: &Path, run_toml: String) -> ServeOptions {
    ServeOptions {
        config: CoordinatorConfig {
            listen: "127.0.0.1:0".parse().expect("a socket address"),
            max_message_bytes: fedprofile_protocol::DEFAULT_MAX_MESSAGE_BYTES,
            tls: Some(TlsFiles {
                ca_cert: certs::ca_cert_path(dir),
                cert: certs::cert_path(dir, "coordinator"),
                key: certs::key_path(dir, "coordinator"),
            }),
            crl: None,
            state_dir: dir.join("state"),
            metrics_listen: None,
        },
        queue_run: Some((dir.join("run.toml"), run_toml)),
        out_dir: None,
        exit_when_idle: true,
        insecure: false,
        addr_file: None,
        progress: false,
        accept_state_loss: false,
    }
}

/// mTLS client settings for the client certificate `name` of `dir`'s CA.
pub fn client_tls(dir: &Path, name: &str) -> ClientTlsConfig {
    let files = TlsFiles {
        ca_cert: certs::ca_cert_path(dir),
        cert: certs::cert_path(dir, name),
        key: certs::key_path(dir, name),
    };
    tls::client_config(&files, "coordinator").expect("client TLS settings")
}
