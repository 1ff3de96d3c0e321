//! What a certificate for `[tls.issue]` must be before it is written or served, whether the
//! pki engine just answered with it or it was read back from the state directory:
//!
//! - its key is the key made on the device (the CSR's);
//! - it chains to `tls.issue.issuer_ca` (by default `tls.client_ca`), as a server
//!   certificate: rustls's own path building (`verify_server_cert_signed_by_trust_anchor`,
//!   webpki underneath), so the checks are the ones a peer makes, extended key usage
//!   included;
//! - it carries the names `[tls.issue]` asks for, and no other (but the CN, which Vault and
//!   OpenBao also write as a SAN), and a key of the configured type;
//! - a new one is valid now (up to [`CLOCK_SKEW`] early) and for longer than the renewal
//!   window and [`MIN_VALIDITY`], so that a renewal never comes due at once.
//!
//! A held certificate whose names or key type no longer match the config is
//! [`Problem::Stale`]: still ours and servable, but due for a new one. Anything else wrong
//! is [`Problem::Invalid`]: never written, never served.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, SystemTime},
};

use rustls::{
    CertificateError, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime},
    server::ParsedCertificate,
};

use crate::{
    config::Issue,
    x509::{self, Names},
};

/// How far in the future a new certificate's notBefore may be: the engine's clock and the
/// device's may differ by this much (OpenBao and Vault back-date notBefore by 30 s anyway).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The least validity a new certificate must have: whatever the engine answers, renewals
/// never come closer together than about two thirds of this.
pub const MIN_VALIDITY: Duration = Duration::from_secs(30);

/// What is wrong with a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not to be served: it does not parse, its key is another, it does not chain to the
    /// trusted CAs, or (a new one) it is not valid now or for long enough.
    Invalid(String),
    /// Ours and valid, but not what `[tls.issue]` asks for now (names, key type): a new one
    /// is due.
    Stale(String),
}

impl Problem {
    pub fn reason(&self) -> &str {
        match self {
            Problem::Invalid(reason) | Problem::Stale(reason) => reason,
        }
    }
}

/// What the daemon keeps of a certificate that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Colon-separated hex, as the engine writes it.
    pub serial: String,
}

/// Checks `chain` (leaf first) made for the key whose SubjectPublicKeyInfo is `spki`
/// against `issue`, the chain as of `at`.
pub fn check(
    issue: &Issue,
    chain: &[CertificateDer<'_>],
    spki: &[u8],
    at: SystemTime,
) -> Result<Leaf, Problem> {
    let invalid = |reason: String| Problem::Invalid(reason);
    let leaf = chain
        .first()
        .ok_or_else(|| invalid("there is no certificate".into()))?;
    let (Some(not_before), Some(not_after), Some(serial)) = (
        x509::not_before(leaf),
        x509::not_after(leaf),
        x509::serial(leaf),
    ) else {
        return Err(invalid(
            "the certificate's validity or serial does not parse".into(),
        ));
    };
    if x509::public_key(leaf).as_deref() != Some(spki) {
        return Err(invalid(
            "its public key is not the one of the key made for it on the device".into(),
        ));
    }
    chains_to(&issue.issuer_ca, leaf, &chain[1..], at).map_err(invalid)?;
    let names =
        x509::names(leaf).ok_or_else(|| invalid("its subjectAltName does not parse".into()))?;
    if let Some(differ) = names_differ(issue, &names) {
        return Err(Problem::Stale(differ));
    }
    match x509::key_type(spki) {
        Some(kind) if kind == issue.key_type => {}
        kind => {
            return Err(Problem::Stale(format!(
                "its key is {}, and tls.issue.key_type is {}",
                kind.map_or("of another type", |k| k.name()),
                issue.key_type.name()
            )));
        }
    }
    Ok(Leaf {
        not_before,
        not_after,
        serial,
    })
}

/// Checks a certificate the engine has just issued for the key `spki`: [`check`] as of now,
/// every problem fatal, and valid now and for longer than the renewal window.
pub fn fresh(issue: &Issue, chain: &[CertificateDer<'_>], spki: &[u8]) -> Result<Leaf, String> {
    let now = SystemTime::now();
    // Its own times first: "expired" says more than the chain check's "not valid now".
    let leaf = chain.first();
    if let Some(not_after) = leaf.and_then(|l| x509::not_after(l))
        && not_after <= now
    {
        return Err(format!(
            "it expired at {} unix time, {}s ago",
            unix(not_after),
            secs(now, not_after)
        ));
    }
    let not_before = leaf.and_then(|l| x509::not_before(l)).unwrap_or(now);
    if not_before > now + CLOCK_SKEW {
        return Err(format!(
            "it is not valid before {} unix time, {}s from now (the engine's clock or the device's is off)",
            unix(not_before),
            secs(not_before, now)
        ));
    }
    // A notBefore up to CLOCK_SKEW ahead: the chain as of then.
    let leaf =
        check(issue, chain, spki, now.max(not_before)).map_err(|p| p.reason().to_string())?;
    // With the default window (a third of the lifetime) only the floor can be short.
    let left = leaf.not_after.duration_since(now).unwrap_or_default();
    let (least, what) = match issue.renew_before {
        Some(before) if before > MIN_VALIDITY => (before, "tls.issue.renew_before"),
        _ => (MIN_VALIDITY, "the least a certificate must have"),
    };
    if left <= least {
        return Err(format!(
            "it is valid for only {}s, not longer than {what} ({}s): it would be due for renewal at once",
            left.as_secs(),
            least.as_secs()
        ));
    }
    Ok(leaf)
}

/// How long before notAfter renewal is due: `renew_before`, or a third of the lifetime,
/// counted from when the certificate was issued to the device (`issued_at`), not from its
/// notBefore, which the engine back-dates (OpenBao and Vault by 30 s).
pub fn renew_window(issue: &Issue, issued_at: SystemTime, not_after: SystemTime) -> Duration {
    let lifetime = not_after.duration_since(issued_at).unwrap_or_default();
    issue.renew_before.unwrap_or(lifetime / 3).min(lifetime)
}

/// The SubjectPublicKeyInfo of a private key, as rustls derives it (ring); `None` for a key
/// it cannot use.
pub fn key_spki(key: &PrivateKeyDer<'_>) -> Option<Vec<u8>> {
    let signing = rustls::crypto::ring::sign::any_supported_type(key).ok()?;
    Some(signing.public_key()?.as_ref().to_vec())
}

/// Whether `leaf` chains, through `intermediates`, to a CA of the bundle at `trust`, as a
/// server certificate valid at `at`: the reason when not.
fn chains_to(
    trust: &Path,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    at: SystemTime,
) -> Result<(), String> {
    let shown = trust.display();
    let mut roots = RootCertStore::empty();
    let cas = crate::tls::load_certs(trust)
        .map_err(|e| format!("the CAs it must chain to (tls.issue.issuer_ca): {e}"))?;
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| format!("tls.issue.issuer_ca {shown}: {e}"))?;
    }
    let parsed = ParsedCertificate::try_from(leaf)
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        intermediates,
        UnixTime::since_unix_epoch(since),
        algorithms,
    )
    .map_err(|e| match e {
        rustls::Error::InvalidCertificate(error) => match error {
            CertificateError::UnknownIssuer => format!(
                "it does not chain to a CA in {shown} (tls.issue.issuer_ca, by default tls.client_ca)"
            ),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "it is not for server authentication: its extended key usage lacks serverAuth (the role's server_flag)".to_string()
            }
            CertificateError::BadSignature => {
                "a signature in its chain does not verify".to_string()
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => {
                format!("a certificate of its chain is not valid now: {error}")
            }
            other => format!("its chain to {shown} does not verify: {other}"),
        },
        other => format!("its chain to {shown} does not verify: {other}"),
    })
}

/// What differs between the names `names` carries and the ones `issue` asks for, if
/// anything. The CN may come back as a DNS or email SAN too (Vault and OpenBao add it unless
/// the role says `exclude_cn_from_sans`).
fn names_differ(issue: &Issue, names: &Names) -> Option<String> {
    let mut said = Vec::new();
    match names.common_name.as_deref() {
        Some(cn) if cn == issue.common_name => {}
        Some(cn) => said.push(format!("its CN is `{cn}`, not `{}`", issue.common_name)),
        None => said.push(format!("it has no CN (asked: `{}`)", issue.common_name)),
    }
    let lower = |names: &[String]| -> BTreeSet<String> {
        names.iter().map(|n| n.to_ascii_lowercase()).collect()
    };
    let cn = issue.common_name.to_ascii_lowercase();
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    let mut compare =
        |kind: &str, asked: BTreeSet<String>, got: BTreeSet<String>, cn: Option<&str>| {
            missing.extend(asked.difference(&got).map(|n| format!("{kind}:{n}")));
            extra.extend(
                got.difference(&asked)
                    .filter(|n| Some(n.as_str()) != cn)
                    .map(|n| format!("{kind}:{n}")),
            );
        };
    compare("DNS", lower(&issue.alt_names), lower(&names.dns), Some(&cn));
    compare(
        "URI",
        issue.uri_sans.iter().cloned().collect(),
        names.uris.iter().cloned().collect(),
        None,
    );
    compare(
        "IP",
        issue.ip_sans.iter().map(|ip| ip.to_string()).collect(),
        names.ips.iter().map(|ip| ip.to_string()).collect(),
        None,
    );
    compare("email", BTreeSet::new(), lower(&names.emails), Some(&cn));
    extra.extend(names.other.iter().cloned());
    if !missing.is_empty() {
        said.push(format!("it lacks {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        said.push(format!(
            "it carries names not asked for: {}",
            extra.join(", ")
        ));
    }
    (!said.is_empty()).then(|| said.join("; "))
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whole seconds from `earlier` to `later`, 0 when not later.
fn secs(later: SystemTime, earlier: SystemTime) -> u64 {
    later.duration_since(earlier).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Authority, Leaf as Asked, Usage};
    use rcgen::{KeyPair, PublicKeyData};
    use rustls::pki_types::pem::PemObject;

    /// A `[tls.issue]` asking for CN `gw`, DNS `localhost`, a SPIFFE id and 127.0.0.1,
    /// trusting the CA bundle at `trust`.
    fn issue(trust: &Path, extra: &str) -> Issue {
        let text = format!(
            "[tls.issue]\naddr = \"https://bao:8200\"\nca_cert = \"/ca.pem\"\nrole = \"r\"\n\
             common_name = \"gw\"\nalt_names = [\"localhost\"]\nuri_sans = [\"spiffe://t/gw\"]\n\
             ip_sans = [\"127.0.0.1\"]\nauth = \"cert\"\nstate_dir = \"/var/lib/v\"\n\
             issuer_ca = \"{}\"\n{extra}",
            trust.display()
        );
        *crate::config::Config::parse("t", &text)
            .unwrap()
            .tls
            .issue
            .unwrap()
    }

    const NAMES: [&str; 3] = ["localhost", "spiffe://t/gw", "127.0.0.1"];

    struct Setup {
        _dir: tempfile::TempDir,
        ca: Authority,
        issue: Issue,
        key: KeyPair,
    }

    fn setup(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("pki root").unwrap();
        let trust = dir.path().join("trust.pem");
        std::fs::write(&trust, ca.cert_pem()).unwrap();
        Setup {
            issue: issue(&trust, extra),
            _dir: dir,
            ca,
            key: KeyPair::generate().unwrap(),
        }
    }

    fn chain(pems: &[String]) -> Vec<CertificateDer<'static>> {
        pems.iter()
            .map(|p| CertificateDer::from_pem_slice(p.as_bytes()).unwrap())
            .collect()
    }

    impl Setup {
        /// A certificate of `ca` for this setup's key.
        fn signed(&self, asked: &Asked) -> Vec<CertificateDer<'static>> {
            chain(&[self.ca.sign(asked, &self.key).unwrap()])
        }

        fn spki(&self) -> Vec<u8> {
            self.key.subject_public_key_info()
        }
    }

    /// What the config asks for, for the key made for it, chaining to the trusted CA and
    /// valid for a while: it passes, the CN back as a DNS SAN too.
    #[test]
    fn a_good_certificate_passes() {
        let s = setup("");
        let good = s.signed(&Asked::new("gw", &NAMES, Usage::Server, 1));
        let leaf = fresh(&s.issue, &good, &s.spki()).unwrap();
        assert!(leaf.not_after > SystemTime::now());
        let mut with_cn = NAMES.to_vec();
        with_cn.push("gw");
        let good = s.signed(&Asked::new("gw", &with_cn, Usage::Server, 1));
        fresh(&s.issue, &good, &s.spki()).unwrap();
        // No extended key usage at all is fine for a server too.
        let mut any = Asked::new("gw", &NAMES, Usage::Server, 1);
        any.usage = None;
        fresh(&s.issue, &s.signed(&any), &s.spki()).unwrap();
    }

    /// The hostile pki's three answers: another key, other names, already expired; each
    /// refused with what is wrong.
    #[test]
    fn another_key_other_names_or_expired_are_refused() {
        let s = setup("");
        let asked = Asked::new("gw", &NAMES, Usage::Server, 1);
        let other_key = chain(&[s.ca.issue(&asked).unwrap().cert]);
        let err = fresh(&s.issue, &other_key, &s.spki()).unwrap_err();
        assert!(err.contains("public key is not the one"), "{err}");
        assert!(matches!(
            check(&s.issue, &other_key, &s.spki(), SystemTime::now()),
            Err(Problem::Invalid(_))
        ));

        let evil = s.signed(&Asked::new("gw", &["evil.example"], Usage::Server, 1));
        let err = fresh(&s.issue, &evil, &s.spki()).unwrap_err();
        assert!(
            err.contains("lacks DNS:localhost, URI:spiffe://t/gw, IP:127.0.0.1")
                && err.contains("not asked for: DNS:evil.example"),
            "{err}"
        );
        let more = [NAMES.as_slice(), &["evil.example"]].concat();
        let err = fresh(
            &s.issue,
            &s.signed(&Asked::new("gw", &more, Usage::Server, 1)),
            &s.spki(),
        )
        .unwrap_err();
        assert_eq!(err, "it carries names not asked for: DNS:evil.example");
        let err = fresh(
            &s.issue,
            &s.signed(&Asked::new("root", &NAMES, Usage::Server, 1)),
            &s.spki(),
        )
        .unwrap_err();
        assert!(err.contains("its CN is `root`, not `gw`"), "{err}");

        let mut expired = asked.clone();
        expired.not_before = SystemTime::now() - Duration::from_secs(7200);
        expired.not_after = SystemTime::now() - Duration::from_secs(3600);
        let err = fresh(&s.issue, &s.signed(&expired), &s.spki()).unwrap_err();
        assert!(
            err.contains("not valid now") || err.contains("expired"),
            "{err}"
        );
    }

    /// A certificate of another CA, or one for client authentication only, is refused;
    /// trust through an intermediate the answer carries is found.
    #[test]
    fn the_chain_must_reach_the_configured_trust_as_a_server_certificate() {
        let s = setup("");
        let asked = Asked::new("gw", &NAMES, Usage::Server, 1);
        let stranger = Authority::new("another pki").unwrap();
        let theirs = chain(&[stranger.sign(&asked, &s.key).unwrap()]);
        let err = fresh(&s.issue, &theirs, &s.spki()).unwrap_err();
        assert!(err.contains("does not chain to a CA in"), "{err}");
        let mut client = asked.clone();
        client.usage = Some(Usage::Client);
        let err = fresh(&s.issue, &s.signed(&client), &s.spki()).unwrap_err();
        assert!(err.contains("lacks serverAuth"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let root = Authority::root("root", 1).unwrap();
        let middle = root.intermediate("intermediate").unwrap();
        let trust = dir.path().join("root.pem");
        std::fs::write(&trust, root.cert_pem()).unwrap();
        let issue = issue(&trust, "");
        let leaf = middle.sign(&asked, &s.key).unwrap();
        fresh(
            &issue,
            &chain(&[leaf.clone(), middle.cert_pem()]),
            &s.spki(),
        )
        .unwrap();
        let err = fresh(&issue, &chain(&[leaf]), &s.spki()).unwrap_err();
        assert!(err.contains("does not chain"), "{err}");
    }

    /// A new certificate must outlast the renewal window: one that would be due at once is
    /// refused; notBefore back-dating does not count toward the lifetime.
    #[test]
    fn a_new_certificate_must_outlast_the_renewal_window() {
        let s = setup("renew_before = \"50s\"\n");
        let mut short = Asked::new("gw", &NAMES, Usage::Server, 1);
        short.not_after = SystemTime::now() + Duration::from_secs(40);
        let err = fresh(&s.issue, &s.signed(&short), &s.spki()).unwrap_err();
        assert!(err.contains("tls.issue.renew_before (50s)"), "{err}");
        short.not_after = SystemTime::now() + Duration::from_secs(20);
        let s = setup("");
        let err = fresh(&s.issue, &s.signed(&short), &s.spki()).unwrap_err();
        assert!(
            err.contains("the least a certificate must have (30s)"),
            "{err}"
        );
        let mut early = Asked::new("gw", &NAMES, Usage::Server, 1);
        early.not_before = SystemTime::now() + Duration::from_secs(3600);
        let err = fresh(&s.issue, &s.signed(&early), &s.spki()).unwrap_err();
        assert!(
            err.contains("not valid now") || err.contains("not valid before"),
            "{err}"
        );

        // 90 s issued now, its notBefore back-dated 30 s: a third of 90 s, not of 120 s.
        let now = SystemTime::now();
        assert_eq!(
            renew_window(&s.issue, now, now + Duration::from_secs(90)),
            Duration::from_secs(30)
        );
    }

    /// A held certificate whose names or key type the config no longer asks for is stale,
    /// not invalid.
    #[test]
    fn changed_names_or_key_type_make_a_held_certificate_stale() {
        let s = setup("");
        let held = s.signed(&Asked::new("gw", &NAMES, Usage::Server, 1));
        let now = SystemTime::now();
        check(&s.issue, &held, &s.spki(), now).unwrap();
        let mut renamed = s.issue.clone();
        renamed.uri_sans = vec!["spiffe://t/gw-new".into()];
        match check(&renamed, &held, &s.spki(), now) {
            Err(Problem::Stale(reason)) => assert!(
                reason.contains("lacks URI:spiffe://t/gw-new")
                    && reason.contains("not asked for: URI:spiffe://t/gw"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        let mut p384 = s.issue.clone();
        p384.key_type = x509::KeyType::P384;
        assert_eq!(
            check(&p384, &held, &s.spki(), now),
            Err(Problem::Stale(
                "its key is p256, and tls.issue.key_type is p384".into()
            ))
        );
    }

    /// The public key rustls derives from a private key is the one its certificate carries,
    /// for each key type the daemon makes.
    #[test]
    fn the_key_of_a_private_key_matches_its_certificate() {
        let s = setup("");
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            let der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
            assert_eq!(key_spki(&der).unwrap(), key.subject_public_key_info());
            let cert = chain(&[s
                .ca
                .sign(&Asked::new("gw", &NAMES, Usage::Server, 1), &key)
                .unwrap()]);
            assert_eq!(
                x509::public_key(&cert[0]).unwrap(),
                key.subject_public_key_info()
            );
        }
    }
}
