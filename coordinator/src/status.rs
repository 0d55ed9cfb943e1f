//! The coordinator's gRPC edge errors and the one place they become a
//! `tonic::Status` ([`to_status`]): each layer of the edge has its typed error
//! ([`PeerError`] for who is calling, [`SessionError`] for the federation
//! stream, [`AdminError`] for the operators' API), its sentence is its
//! `Display`, and its gRPC code is chosen here and nowhere else.
//!
//! | error | code |
//! |---|---|
//! | no certificate, unusable certificate | `UNAUTHENTICATED` |
//! | a partner certificate on the admin API, an operator one on the federation | `PERMISSION_DENIED` |
//! | a second session for a client | `ALREADY_EXISTS` |
//! | first message not a hello, bad insecure name, invalid run file, model command without a reason | `INVALID_ARGUMENT` |
//! | unsupported protocol version, run already finished, nothing to roll back to | `FAILED_PRECONDITION` |
//! | no such run, no such model target or version | `NOT_FOUND` |
//! | run not active in this process yet | `UNAVAILABLE` |
//! | a stalled reader, a flood (session closed) | `RESOURCE_EXHAUSTED` |
//! | tasks missed (session closed) | `DEADLINE_EXCEEDED` |
//! | the database failed | `INTERNAL` |

use tonic::{Code, Status};

use crate::store::StoreError;

/// Why a caller's certificate does not admit it.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No certificate was presented (`needed` says which kind).
    #[error("{needed} is required")]
    NoCertificate {
        /// "a client certificate" or "an operator certificate".
        needed: &'static str,
    },
    /// An operator certificate tried to join the federation.
    #[error("'{0}' holds an operator certificate, which cannot join the federation as a partner")]
    OperatorAsPartner(String),
    /// A partner certificate called the admin API.
    #[error(
        "'{0}' holds a partner certificate; the admin API needs an operator certificate (OU={ou})",
        ou = fedprofile_protocol::tls::OPERATOR_OU
    )]
    PartnerAsOperator(String),
    /// The certificate has no usable identity.
    #[error(transparent)]
    Unusable(#[from] fedprofile_protocol::tls::TlsError),
}

/// Why a federation session is refused or ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Another session of the same client is open.
    #[error(
        "a session for client {client} is already open (from {peer} since {since}); two nodes must not share a certificate"
    )]
    AlreadyOpen {
        /// The client.
        client: String,
        /// Where the open session comes from.
        peer: String,
        /// Since when.
        since: String,
    },
    /// The stream did not start with a hello.
    #[error("the first message must be a hello")]
    NoHello,
    /// The client speaks another protocol version.
    #[error(
        "protocol version {0} is not supported (this coordinator speaks {current})",
        current = fedprofile_protocol::PROTOCOL_VERSION
    )]
    ProtocolVersion(u32),
    /// Insecure mode: the claimed name is not a client id.
    #[error("insecure mode: hello.insecure_name must be a valid client id")]
    InsecureName,
    /// The coordinator closes the session (`code` is what the client reads).
    #[error("session closed by the coordinator: {why}")]
    Closed {
        /// The gRPC code: why the session ends.
        code: Code,
        /// In words.
        why: String,
    },
}

/// Why an operator's command fails.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No run has this id.
    #[error("no run with id '{0}'")]
    NoSuchRun(String),
    /// The run file cannot be used (the sentence names file and field).
    #[error("{0}")]
    InvalidRunFile(String),
    /// The run is running, but not in this process yet.
    #[error("the run is not active in this coordinator process yet; try again")]
    NotActiveYet,
    /// The run has ended.
    #[error("run {run_id} is already {state}")]
    AlreadyEnded {
        /// The run.
        run_id: String,
        /// Its terminal state.
        state: &'static str,
    },
    /// No model has this target, or the target has no such version.
    #[error("{0}")]
    NoSuchModel(String),
    /// The registry cannot do this now (nothing to roll back to, the version
    /// is champion already); the sentence says why.
    #[error("{0}")]
    ModelPrecondition(String),
    /// A model command without its required `--reason`, or a malformed name.
    #[error("{0}")]
    InvalidModelCommand(String),
    /// The database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Any error of the coordinator's gRPC edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// See [`PeerError`].
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// See [`SessionError`].
    #[error(transparent)]
    Session(#[from] SessionError),
    /// See [`AdminError`].
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// The one error → gRPC status map of the coordinator.
pub fn to_status(error: impl Into<EdgeError>) -> Status {
    let error = error.into();
    let code = match &error {
        EdgeError::Peer(PeerError::NoCertificate { .. } | PeerError::Unusable(_)) => {
            Code::Unauthenticated
        }
        EdgeError::Peer(PeerError::OperatorAsPartner(_) | PeerError::PartnerAsOperator(_)) => {
            Code::PermissionDenied
        }
        EdgeError::Session(SessionError::AlreadyOpen { .. }) => Code::AlreadyExists,
        EdgeError::Session(SessionError::NoHello | SessionError::InsecureName)
        | EdgeError::Admin(AdminError::InvalidRunFile(_) | AdminError::InvalidModelCommand(_)) => {
            Code::InvalidArgument
        }
        EdgeError::Session(SessionError::ProtocolVersion(_))
        | EdgeError::Admin(AdminError::AlreadyEnded { .. } | AdminError::ModelPrecondition(_)) => {
            Code::FailedPrecondition
        }
        EdgeError::Session(SessionError::Closed { code, .. }) => *code,
        EdgeError::Admin(AdminError::NoSuchRun(_) | AdminError::NoSuchModel(_)) => Code::NotFound,
        EdgeError::Admin(AdminError::NotActiveYet) => Code::Unavailable,
        EdgeError::Admin(AdminError::Store(_)) => Code::Internal,
    };
    Status::new(code, error.to_string())
}

impl From<PeerError> for Status {
    fn from(error: PeerError) -> Status {
        to_status(error)
    }
}

impl From<SessionError> for Status {
    fn from(error: SessionError) -> Status {
        to_status(error)
    }
}

impl From<AdminError> for Status {
    fn from(error: AdminError) -> Status {
        to_status(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_sentences_are_those_clients_and_operators_read() {
        let cases: Vec<(EdgeError, Code, &str)> = vec![
            (
                PeerError::NoCertificate {
                    needed: "an operator certificate",
                }
                .into(),
                Code::Unauthenticated,
                "an operator certificate is required",
            ),
            (
                PeerError::PartnerAsOperator("partner-a".into()).into(),
                Code::PermissionDenied,
                "'partner-a' holds a partner certificate; the admin API needs an operator certificate (OU=fedprofile-operator)",
            ),
            (
                SessionError::ProtocolVersion(9).into(),
                Code::FailedPrecondition,
                "protocol version 9 is not supported (this coordinator speaks 1)",
            ),
            (
                SessionError::Closed {
                    code: Code::DeadlineExceeded,
                    why: "missed".into(),
                }
                .into(),
                Code::DeadlineExceeded,
                "session closed by the coordinator: missed",
            ),
            (
                AdminError::NoSuchRun("r".into()).into(),
                Code::NotFound,
                "no run with id 'r'",
            ),
            (
                AdminError::NotActiveYet.into(),
                Code::Unavailable,
                "the run is not active in this coordinator process yet; try again",
            ),
        ];
        for (error, code, message) in cases {
            let status = to_status(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
