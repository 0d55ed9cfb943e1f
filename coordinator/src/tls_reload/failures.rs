//! Why handshakes fail, who tried, and how that is logged without flooding.
//!
//! - [`FailureCause`] names the cause of a failed handshake in words (unknown CA,
//!   expired, not yet valid, revoked, no client certificate, not TLS, …), taken
//!   from the rustls error of the accept.
//! - [`RecordingVerifier`] wraps the client-certificate verifier: when it refuses
//!   a certificate, the certificate's common name, issuer, validity and serial are
//!   kept for the connection being handshaken (a task-local slot set by the accept
//!   loop), so the failure can say *who* tried, not only from where.
//! - [`HandshakeFailures`] is the small shared registry of recent failures: the
//!   latest per identity (CN) and per (address, cause) for anonymous ones, the
//!   counts per cause (for the `cause` metric label), and the log throttle. The
//!   coordinator queries it to explain a run that waits for a partner whose
//!   handshakes keep failing.
//! - [`LogThrottle`]: the first failure per (peer IP, cause) is logged at once;
//!   repeats within the interval (60 s) are counted, and the first repeat after
//!   the interval is logged with the count of those suppressed. Its state is
//!   bounded (old keys are dropped).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Why a handshake failed, in categories an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureCause {
    /// The client certificate does not chain to a CA of the bundle.
    UnknownCa,
    /// The client certificate is past its end of validity.
    Expired,
    /// The client certificate's validity has not begun.
    NotYetValid,
    /// The client certificate is on a revocation list.
    Revoked,
    /// The client presented no certificate.
    NoClientCertificate,
    /// The client certificate is unusable for another reason (bad encoding,
    /// wrong key usage, bad signature).
    BadCertificate,
    /// The client refused the coordinator's certificate (it sent an alert).
    ClientRefusedServer,
    /// The peer did not speak TLS, or broke the protocol.
    NotTls,
    /// The handshake did not finish in time (or the connection sent nothing).
    Timeout,
    /// Anything else rustls or the socket reported.
    Other,
}

impl FailureCause {
    /// The value of the metric's `cause` label.
    pub fn label(self) -> &'static str {
        match self {
            FailureCause::UnknownCa => "unknown_ca",
            FailureCause::Expired => "expired",
            FailureCause::NotYetValid => "not_yet_valid",
            FailureCause::Revoked => "revoked",
            FailureCause::NoClientCertificate => "no_client_certificate",
            FailureCause::BadCertificate => "bad_certificate",
            FailureCause::ClientRefusedServer => "client_refused_server",
            FailureCause::NotTls => "not_tls",
            FailureCause::Timeout => "timeout",
            FailureCause::Other => "other",
        }
    }

    /// Every cause, in label order of the metric.
    pub const ALL: [FailureCause; 10] = [
        FailureCause::UnknownCa,
        FailureCause::Expired,
        FailureCause::NotYetValid,
        FailureCause::Revoked,
        FailureCause::NoClientCertificate,
        FailureCause::BadCertificate,
        FailureCause::ClientRefusedServer,
        FailureCause::NotTls,
        FailureCause::Timeout,
        FailureCause::Other,
    ];

    /// Classifies the error of a failed accept (an `io::Error` that usually
    /// wraps a `rustls::Error`).
    pub fn of_io(e: &std::io::Error) -> FailureCause {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => FailureCause::of_rustls(tls),
            None if e.kind() == std::io::ErrorKind::InvalidData => FailureCause::NotTls,
            None if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
            {
                FailureCause::NotTls
            }
            None => FailureCause::Other,
        }
    }

    /// Classifies a rustls error seen by the server.
    pub fn of_rustls(e: &rustls::Error) -> FailureCause {
        use CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                // A bad signature: issued under a trusted CA's name by another key
                // (e.g. another development CA with the same name).
                #[allow(deprecated)]
                C::UnknownIssuer
                | C::BadSignature
                | C::UnknownRevocationStatus
                | C::ExpiredRevocationList
                | C::ExpiredRevocationListContext { .. } => FailureCause::UnknownCa,
                C::Expired | C::ExpiredContext { .. } => FailureCause::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => FailureCause::NotYetValid,
                C::Revoked => FailureCause::Revoked,
                _ => FailureCause::BadCertificate,
            },
            rustls::Error::NoCertificatesPresented => FailureCause::NoClientCertificate,
            rustls::Error::AlertReceived(_) => FailureCause::ClientRefusedServer,
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::PeerIncompatible(_)
            | rustls::Error::PeerMisbehaved(_)
            | rustls::Error::NoApplicationProtocol
            | rustls::Error::DecryptError => FailureCause::NotTls,
            _ => FailureCause::Other,
        }
    }
}

/// What the verifier saw of a certificate it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCertificate {
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// The issuer, as a distinguished name (e.g. `CN=someone else`).
    pub issuer: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The serial number, hex.
    pub serial: String,
}

impl PresentedCertificate {
    /// Parses a DER certificate; `None` if it does not parse.
    pub fn parse(der: &[u8]) -> Option<PresentedCertificate> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let serial = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(PresentedCertificate {
            common_name,
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            serial,
        })
    }
}

tokio::task_local! {
    /// The certificate the verifier refused during the handshake in this task.
    static REFUSED: RefCell<Option<PresentedCertificate>>;
}

/// Runs `handshake` with a slot in which [`RecordingVerifier`] leaves the
/// certificate it refused; returns the handshake's result and that certificate.
pub async fn with_refused_slot<F: std::future::Future>(
    handshake: F,
) -> (F::Output, Option<PresentedCertificate>) {
    REFUSED
        .scope(RefCell::new(None), async move {
            let out = handshake.await;
            let refused = REFUSED.with(|slot| slot.borrow_mut().take());
            (out, refused)
        })
        .await
}

/// A client-certificate verifier that remembers what it refused (see the
/// module docs); it decides exactly as the wrapped verifier.
#[derive(Debug)]
pub struct RecordingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl RecordingVerifier {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> RecordingVerifier {
        RecordingVerifier { inner }
    }
}

impl ClientCertVerifier for RecordingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if verdict.is_err() {
            let presented = PresentedCertificate::parse(end_entity.as_ref());
            // Outside an accept (no slot) there is nothing to record.
            let _ = REFUSED.try_with(|slot| *slot.borrow_mut() = presented);
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One failed handshake (or the latest of a series).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeFailure {
    /// The CN of the certificate presented, when one was presented and parsed.
    pub identity: Option<String>,
    /// The category.
    pub cause: FailureCause,
    /// The cause in words, about the peer ("its certificate expired at …").
    pub detail: String,
    /// Where the connection came from.
    pub peer: SocketAddr,
    /// When it failed.
    pub at: SystemTime,
    /// How many failures of this identity (or address and cause) were recorded.
    pub count: u64,
}

impl HandshakeFailure {
    /// Builds the failure of a handshake from `peer` with `cause`, the
    /// certificate the verifier refused (if any) and the rustls error text.
    pub fn new(
        peer: SocketAddr,
        cause: FailureCause,
        refused: Option<&PresentedCertificate>,
        error: &str,
        at: SystemTime,
    ) -> HandshakeFailure {
        HandshakeFailure {
            identity: refused.and_then(|c| c.common_name.clone()),
            cause,
            detail: describe(cause, refused, error),
            peer,
            at,
            count: 1,
        }
    }
}

/// The cause in words, about the peer.
fn describe(cause: FailureCause, cert: Option<&PresentedCertificate>, error: &str) -> String {
    match (cause, cert) {
        (FailureCause::UnknownCa, Some(c)) => format!(
            "its certificate (issued by '{}') is not signed by a CA the coordinator trusts",
            c.issuer
        ),
        (FailureCause::UnknownCa, None) => {
            "its certificate is not signed by a CA the coordinator trusts".into()
        }
        (FailureCause::Expired, Some(c)) => format!(
            "its certificate expired at {}",
            fedprofile_protocol::tls::rfc3339(c.not_after)
        ),
        (FailureCause::Expired, None) => "its certificate has expired".into(),
        (FailureCause::NotYetValid, Some(c)) => format!(
            "its certificate is not valid before {} (check the clocks)",
            fedprofile_protocol::tls::rfc3339(c.not_before)
        ),
        (FailureCause::NotYetValid, None) => "its certificate is not valid yet".into(),
        (FailureCause::Revoked, Some(c)) => {
            format!("its certificate (serial {}) is revoked", c.serial)
        }
        (FailureCause::Revoked, None) => "its certificate is revoked".into(),
        (FailureCause::NoClientCertificate, _) => "it presented no client certificate".into(),
        (FailureCause::BadCertificate, _) => format!("its certificate cannot be used ({error})"),
        (FailureCause::ClientRefusedServer, _) => format!(
            "it refused the coordinator's certificate ({error}): its ca_cert is probably not the federation CA, or its server_name does not match"
        ),
        (FailureCause::NotTls, _) => format!("it did not speak TLS ({error})"),
        (FailureCause::Timeout, _) => format!("the handshake did not finish in time ({error})"),
        (FailureCause::Other, _) => format!("the handshake failed ({error})"),
    }
}

/// Decides which failures are logged: the first per key at once, then at most
/// one line per interval carrying the count of those not logged.
#[derive(Debug)]
pub struct LogThrottle<K> {
    interval: Duration,
    max_keys: usize,
    /// Per key: when a line was last written, and failures since then not logged.
    keys: HashMap<K, (Instant, u64)>,
}

impl<K: std::hash::Hash + Eq + Clone> LogThrottle<K> {
    /// A throttle with this interval, remembering at most `max_keys` keys.
    pub fn new(interval: Duration, max_keys: usize) -> LogThrottle<K> {
        LogThrottle {
            interval,
            max_keys: max_keys.max(1),
            keys: HashMap::new(),
        }
    }

    /// A failure with `key` at `now`: `Some(n)` if it is to be logged, `n`
    /// being how many like it were not logged since the last line; `None` if it
    /// is only counted.
    pub fn observe(&mut self, key: K, now: Instant) -> Option<u64> {
        if let Some((last, suppressed)) = self.keys.get_mut(&key) {
            if now.duration_since(*last) < self.interval {
                *suppressed += 1;
                return None;
            }
            let n = *suppressed;
            *last = now;
            *suppressed = 0;
            return Some(n);
        }
        if self.keys.len() >= self.max_keys {
            let interval = self.interval;
            self.keys
                .retain(|_, (last, _)| now.duration_since(*last) < interval);
            if self.keys.len() >= self.max_keys {
                // Still full of active keys: forget them all rather than grow.
                self.keys.clear();
            }
        }
        self.keys.insert(key, (now, 0));
        Some(0)
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// How many identities and anonymous (address, cause) series are remembered.
const MAX_REMEMBERED: usize = 1024;

#[derive(Debug)]
struct Inner {
    by_identity: HashMap<String, HandshakeFailure>,
    anonymous: HashMap<(IpAddr, FailureCause), HandshakeFailure>,
    counts: BTreeMap<FailureCause, u64>,
    throttle: LogThrottle<(IpAddr, FailureCause)>,
}

/// The registry of recent handshake failures (see the module docs).
#[derive(Debug)]
pub struct HandshakeFailures {
    inner: Mutex<Inner>,
}

impl Default for HandshakeFailures {
    fn default() -> HandshakeFailures {
        HandshakeFailures::with_log_interval(Duration::from_secs(60))
    }
}

fn keep_newest<K: std::hash::Hash + Eq + Clone>(map: &mut HashMap<K, HandshakeFailure>) {
    if map.len() > MAX_REMEMBERED
        && let Some(oldest) = map.iter().min_by_key(|(_, f)| f.at).map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

impl HandshakeFailures {
    /// A registry whose log lines repeat at most once per `interval` per (IP, cause).
    pub fn with_log_interval(interval: Duration) -> HandshakeFailures {
        HandshakeFailures {
            inner: Mutex::new(Inner {
                by_identity: HashMap::new(),
                anonymous: HashMap::new(),
                counts: BTreeMap::new(),
                throttle: LogThrottle::new(interval, 4 * MAX_REMEMBERED),
            }),
        }
    }

    /// Records `failure` and logs it at info level unless the throttle holds it
    /// back (see [`LogThrottle`]).
    pub fn record(&self, failure: HandshakeFailure) {
        let logged = self.record_quietly(failure.clone(), Instant::now());
        if let Some(suppressed) = logged {
            let identity = failure.identity.as_deref().unwrap_or("-");
            let again = if suppressed > 0 {
                format!(
                    " ({suppressed} more like it from {} since the last line)",
                    failure.peer.ip()
                )
            } else {
                String::new()
            };
            tracing::info!(
                peer = %failure.peer,
                cause = failure.cause.label(),
                identity,
                "TLS handshake from {} refused: {}{again}",
                failure.peer,
                failure.detail
            );
        }
    }

    /// Records `failure` at `now`; returns what [`LogThrottle::observe`] said.
    pub fn record_quietly(&self, mut failure: HandshakeFailure, now: Instant) -> Option<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner.counts.entry(failure.cause).or_default() += 1;
        let logged = inner
            .throttle
            .observe((failure.peer.ip(), failure.cause), now);
        match failure.identity.clone() {
            Some(id) => {
                failure.count += inner.by_identity.get(&id).map_or(0, |f| f.count);
                inner.by_identity.insert(id, failure);
                keep_newest(&mut inner.by_identity);
            }
            None => {
                let key = (failure.peer.ip(), failure.cause);
                failure.count += inner.anonymous.get(&key).map_or(0, |f| f.count);
                inner.anonymous.insert(key, failure);
                keep_newest(&mut inner.anonymous);
            }
        }
        logged
    }

    /// Counts a failure that is not worth a line (e.g. a silent connection
    /// closed to admit another).
    pub fn count(&self, cause: FailureCause, n: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *inner.counts.entry(cause).or_default() += n;
    }

    /// The latest failure of the certificate with this CN.
    pub fn for_identity(&self, identity: &str) -> Option<HandshakeFailure> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.by_identity.get(identity).cloned()
    }

    /// Failures since `since`, newest first: identified ones, then anonymous ones.
    pub fn since(&self, since: SystemTime) -> Vec<HandshakeFailure> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut named: Vec<_> = inner
            .by_identity
            .values()
            .filter(|f| f.at >= since)
            .cloned()
            .collect();
        named.sort_by_key(|f| std::cmp::Reverse(f.at));
        let mut anonymous: Vec<_> = inner
            .anonymous
            .values()
            .filter(|f| f.at >= since)
            .cloned()
            .collect();
        anonymous.sort_by_key(|f| std::cmp::Reverse(f.at));
        named.extend(anonymous);
        named
    }

    /// Failures counted per cause (every cause, zeros included).
    pub fn by_cause(&self) -> Vec<(FailureCause, u64)> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        FailureCause::ALL
            .iter()
            .map(|c| (*c, inner.counts.get(c).copied().unwrap_or(0)))
            .collect()
    }
}

/// "partner-c's handshakes fail: its certificate expired at … (last try from
/// 127.0.0.1:41234, 3 s ago)": one failure, for a run's failure reason.
pub fn explain(failure: &HandshakeFailure, now: SystemTime) -> String {
    let ago = now.duration_since(failure.at).map_or(0, |d| d.as_secs());
    let tries = if failure.count > 1 {
        format!("{} tries, ", failure.count)
    } else {
        String::new()
    };
    match &failure.identity {
        Some(id) => format!(
            "{id}'s handshakes fail: {} ({tries}last try from {}, {ago} s ago)",
            failure.detail, failure.peer
        ),
        None => format!(
            "handshakes from {} fail: {} ({tries}last {ago} s ago)",
            failure.peer.ip(),
            failure.detail
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_first_failure_is_logged_then_one_line_per_interval_with_a_count() {
        let mut t = LogThrottle::new(Duration::from_secs(60), 16);
        let start = Instant::now();
        let key = ("127.0.0.1", FailureCause::UnknownCa);
        assert_eq!(t.observe(key, start), Some(0));
        for s in 1..=59 {
            assert_eq!(t.observe(key, start + Duration::from_secs(s)), None);
        }
        // Another cause from the same address is its own series.
        assert_eq!(
            t.observe(("127.0.0.1", FailureCause::Expired), start),
            Some(0)
        );
        assert_eq!(t.observe(key, start + Duration::from_secs(60)), Some(59));
        assert_eq!(t.observe(key, start + Duration::from_secs(61)), None);
        assert_eq!(t.observe(key, start + Duration::from_secs(200)), Some(1));
    }

    #[test]
    fn the_throttle_stays_bounded() {
        let mut t = LogThrottle::new(Duration::from_secs(60), 8);
        let now = Instant::now();
        for i in 0..100u32 {
            assert_eq!(t.observe(i, now), Some(0));
        }
        assert!(t.keys.len() <= 8);
    }

    fn presented(cn: &str) -> PresentedCertificate {
        PresentedCertificate {
            common_name: Some(cn.into()),
            issuer: "CN=someone else".into(),
            not_before: 1_700_000_000,
            not_after: 1_796_000_000,
            serial: "2a".into(),
        }
    }

    #[test]
    fn failures_are_kept_per_identity_with_a_count_and_per_address_when_anonymous() {
        let reg = HandshakeFailures::default();
        let t0 = SystemTime::now();
        let cert = presented("partner-c");
        for i in 0..3 {
            let f = HandshakeFailure::new(
                peer(40_000 + i),
                FailureCause::UnknownCa,
                Some(&cert),
                "invalid peer certificate: UnknownIssuer",
                t0,
            );
            reg.record_quietly(f, Instant::now());
        }
        let anonymous = HandshakeFailure::new(
            peer(50_000),
            FailureCause::NoClientCertificate,
            None,
            "peer sent no certificates",
            t0,
        );
        reg.record_quietly(anonymous, Instant::now());

        let c = reg.for_identity("partner-c").unwrap();
        assert_eq!(c.count, 3);
        assert_eq!(c.peer, peer(40_002));
        assert_eq!(
            c.detail,
            "its certificate (issued by 'CN=someone else') is not signed by a CA the coordinator trusts"
        );
        let all = reg.since(t0);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].identity, None);
        assert_eq!(all[1].detail, "it presented no client certificate");
        assert!(reg.since(t0 + Duration::from_secs(1)).is_empty());
        let counts: BTreeMap<_, _> = reg.by_cause().into_iter().collect();
        assert_eq!(counts[&FailureCause::UnknownCa], 3);
        assert_eq!(counts[&FailureCause::NoClientCertificate], 1);
        assert_eq!(counts[&FailureCause::Revoked], 0);

        let text = explain(&c, t0 + Duration::from_secs(3));
        assert_eq!(
            text,
            "partner-c's handshakes fail: its certificate (issued by 'CN=someone else') is not signed by a CA the coordinator trusts (3 tries, last try from 127.0.0.1:40002, 3 s ago)"
        );
    }

    #[test]
    fn an_expired_certificate_is_described_with_its_end_of_validity() {
        let cert = presented("partner-c");
        let f = HandshakeFailure::new(
            peer(1),
            FailureCause::Expired,
            Some(&cert),
            "",
            SystemTime::now(),
        );
        assert_eq!(f.detail, "its certificate expired at 2026-11-30T00:53:20Z");
    }

    #[test]
    fn rustls_errors_map_to_causes() {
        use rustls::Error as E;
        let cases = [
            (
                E::InvalidCertificate(CertificateError::UnknownIssuer),
                FailureCause::UnknownCa,
            ),
            (
                E::InvalidCertificate(CertificateError::Expired),
                FailureCause::Expired,
            ),
            (
                E::InvalidCertificate(CertificateError::NotValidYet),
                FailureCause::NotYetValid,
            ),
            (
                E::InvalidCertificate(CertificateError::Revoked),
                FailureCause::Revoked,
            ),
            (
                E::NoCertificatesPresented,
                FailureCause::NoClientCertificate,
            ),
            (
                E::AlertReceived(rustls::AlertDescription::UnknownCA),
                FailureCause::ClientRefusedServer,
            ),
            (
                E::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                FailureCause::NotTls,
            ),
        ];
        for (error, cause) in cases {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error);
            assert_eq!(FailureCause::of_io(&io), cause, "{io}");
        }
    }
}
