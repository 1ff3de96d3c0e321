//! The server certificate from a Vault or OpenBao `pki` engine: a key made here (P-256,
//! P-384 or Ed25519, `tls.issue.key_type`), a CSR for it signed by
//! `POST /v1/{mount}/sign/{role}`. The private key never leaves the device (sign, not issue:
//! the engine sees only the CSR, so it never holds the key). What the engine answers is
//! checked ([`super::verify`]) before it is returned: a certificate for another key, other
//! names, expired or not chaining to the configured trust is refused
//! ([`Error::Invalid`]), and nothing of it is kept.
//!
//! Login is the secrets pull's ([`super::vault::log_in`]): cert auth with the current
//! certificate, AppRole or a token. With cert auth and no certificate that can still log
//! in (none yet, or it expired while the device was off), or when cert auth refuses the
//! certificate (one without clientAuth in its extended key usage, say), the AppRole
//! `fallback` logs in instead, and the log says so.

use std::{
    path::Path,
    sync::LazyLock,
    time::{Duration, SystemTime},
};

use http::Method;
use rustls::pki_types::pem::PemObject;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{
    Failure, Progress, PullError, Secret, Secrets,
    http::Client,
    retry,
    vault::{self, check},
    verify,
};
use crate::{
    config::{Issue, Material, VaultAuth},
    throttle::Throttle,
    x509::KeyType,
};

/// A certificate the engine signed, with the key made for it, checked.
pub struct Issued {
    /// The key (PKCS#8), then the chain, leaf first, without a self-signed root (a peer has
    /// its own copy of the root it trusts): the state directory's one file.
    pub pem: Zeroizing<String>,
    /// Colon-separated hex, as the engine writes it.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// What the device holds now, for choosing how to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Current {
    /// No certificate in the state directory (the first start).
    Missing,
    /// A certificate whose notAfter has passed.
    Expired { not_after: SystemTime },
    /// A certificate that can still log in.
    Valid,
}

/// Why no certificate was issued.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be reached (or kept answering 5xx) until the deadline.
    #[error("pki {addr}: unreachable after {attempts} attempts: {reason}")]
    Unreachable {
        addr: String,
        attempts: u32,
        reason: String,
    },
    /// The engine (or the login) refused: a retry will not help until something changes.
    #[error("pki {addr}: {reason}")]
    Refused { addr: String, reason: String },
    /// The engine answered with a certificate that must not be served.
    #[error("pki {addr}: refused the certificate it issued: {reason}")]
    Invalid { addr: String, reason: String },
}

impl Error {
    /// What kind of failure this is, for the log's pace (a change of kind is said at once).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Unreachable { .. } => "unreachable",
            Error::Refused { .. } => "refused",
            Error::Invalid { .. } => "bad certificate",
        }
    }
}

/// Each of the two fallback lines (no certificate to log in with; cert auth refused it) is
/// said at most this often, with how many were not, so a renewal retried every second near
/// expiry does not repeat it.
const FALLBACK_PACE: Duration = Duration::from_secs(600);
static CANNOT_LOG_IN: LazyLock<Throttle> = LazyLock::new(|| Throttle::every(FALLBACK_PACE));
static REFUSED: LazyLock<Throttle> = LazyLock::new(|| Throttle::every(FALLBACK_PACE));

/// Says that the fallback AppRole logs in, and why, at a bounded pace.
fn falling_back(pace: &Throttle, reason: &str, message: &'static str) {
    if let Some(held) = pace.allow(message) {
        tracing::warn!(reason = %reason, suppressed = held.total(), "{message}");
    }
}

/// Makes a key, has its CSR signed, and returns both. Transient failures are retried with
/// backoff until `deadline` (at least one attempt is made).
pub async fn issue(
    issue: &Issue,
    local: &Secrets,
    current: Current,
    deadline: Instant,
    progress: Progress<'_>,
) -> Result<Issued, Error> {
    let addr = issue.addr.clone();
    let refused = |reason: String| Error::Refused {
        addr: addr.clone(),
        reason,
    };
    let invalid = |reason: String| Error::Invalid {
        addr: addr.clone(),
        reason,
    };
    let failed = |e: PullError| match e {
        PullError::Permanent(reason) => refused(reason),
        PullError::Deadline {
            attempts, reason, ..
        } => Error::Unreachable {
            addr: addr.clone(),
            attempts,
            reason,
        },
    };
    let file = issue.file();
    let auth = login_method(issue, current, &file).map_err(refused)?;
    let identity = match auth {
        VaultAuth::Cert { .. } => Some(
            vault::device_identity(&file, &Material::Path(file.clone()), local).map_err(refused)?,
        ),
        _ => None,
    };
    let client = Client::new(
        &issue.addr,
        &issue.ca_cert,
        identity,
        issue.timeout,
        issue.namespace.clone(),
    )
    .map_err(|e| failed(vault::permanent(e)))?;
    let what = format!("pki {}", issue.addr);
    let (key, spki, csr) = key_and_csr(issue).map_err(refused)?;
    let logged_in = vault::log_in(&client, auth, local, &what, deadline, progress).await;
    let (token, revoke) = match (logged_in, auth, &issue.fallback) {
        // Cert auth refused the certificate the device holds (one without clientAuth in its
        // extended key usage, one the cert auth role does not trust): the AppRole now, not
        // once the certificate has expired.
        (Err(PullError::Permanent(reason)), VaultAuth::Cert { .. }, Some(fallback)) => {
            falling_back(
                &REFUSED,
                &reason,
                "cert auth refused the certificate: logging in with the fallback AppRole (tls.issue.fallback)",
            );
            vault::log_in(&client, fallback, local, &what, deadline, progress)
                .await
                .map_err(failed)?
        }
        (Err(PullError::Permanent(reason)), VaultAuth::Cert { .. }, None) => {
            return Err(refused(format!(
                "{reason}; cert auth needs a certificate it trusts with clientAuth in its extended key usage (the pki role's client_flag), or set tls.issue.fallback = \"approle\""
            )));
        }
        (logged_in, ..) => logged_in.map_err(failed)?,
    };
    let path = format!("/v1/{}/sign/{}", issue.mount, issue.role);
    let body = sign_body(issue, &csr);
    let signed = retry(&what, deadline, progress, || async {
        let response = client
            .request(Method::POST, &path, Some(&token), Some(body.clone()))
            .await?;
        let body = check(response.status, &response.body, &path)?;
        parse_signed(body)
            .ok_or_else(|| Failure::Permanent(format!("{path}: not a pki sign answer")))
    })
    .await;
    if revoke {
        vault::revoke_token(&client, &token).await;
    }
    let blocks = signed.map_err(failed)?;
    let chain = blocks
        .iter()
        .map(|pem| rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{path}: a certificate does not parse: {e}")))?;
    let leaf = verify::fresh(issue, &chain, &spki).map_err(invalid)?;
    let mut pem = Zeroizing::new(String::with_capacity(
        key.len() + blocks.iter().map(|b| b.len() + 1).sum::<usize>(),
    ));
    pem.push_str(&key);
    for (i, (block, der)) in blocks.iter().zip(&chain).enumerate() {
        if i == 0 || !crate::x509::self_issued(der) {
            pem.push_str(block);
            pem.push('\n');
        }
    }
    Ok(Issued {
        pem,
        serial: leaf.serial,
        not_before: leaf.not_before,
        not_after: leaf.not_after,
    })
}

/// How this attempt logs in: the configured method, except that cert auth without a
/// certificate that can log in falls back to the AppRole (with a warning that says why).
fn login_method<'a>(
    issue: &'a Issue,
    current: Current,
    file: &Path,
) -> Result<&'a VaultAuth, String> {
    let VaultAuth::Cert { .. } = &issue.auth else {
        return Ok(&issue.auth);
    };
    let why = match current {
        Current::Valid => return Ok(&issue.auth),
        Current::Missing => format!("there is no certificate in {} yet", file.display()),
        Current::Expired { not_after } => format!(
            "the certificate expired while the device was off or the pki was unreachable (not after {} unix time)",
            not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ),
    };
    match &issue.fallback {
        Some(fallback) => {
            falling_back(
                &CANNOT_LOG_IN,
                &why,
                "cert auth cannot log in: logging in with the fallback AppRole (tls.issue.fallback)",
            );
            Ok(fallback)
        }
        None => Err(format!(
            "cert auth cannot log in: {why}; set tls.issue.fallback = \"approle\" (with role_id and secret_id) so the device can get a new one"
        )),
    }
}

/// A new key of the configured type (PKCS#8 PEM), its SubjectPublicKeyInfo (DER), and a
/// CSR (PEM) for it naming the CN and the SANs.
fn key_and_csr(issue: &Issue) -> Result<(Zeroizing<String>, Vec<u8>, String), String> {
    let algorithm = match issue.key_type {
        KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyType::Ed25519 => &rcgen::PKCS_ED25519,
    };
    let key = rcgen::KeyPair::generate_for(algorithm).map_err(|e| format!("making a key: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, issue.common_name.as_str());
    let ips = issue.ip_sans.iter().map(|ip| ip.to_string());
    for name in issue
        .alt_names
        .iter()
        .chain(&issue.uri_sans)
        .cloned()
        .chain(ips)
    {
        params
            .subject_alt_names
            .push(crate::pki::san(&name).map_err(|e| e.to_string())?);
    }
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| format!("making the CSR: {e}"))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    Ok((Zeroizing::new(key.serialize_pem()), spki, csr))
}

/// The sign request: the CSR, and the names again as fields (a role with
/// `use_csr_sans = false` takes them from there). Every value is a string.
fn sign_body(issue: &Issue, csr: &str) -> Zeroizing<Vec<u8>> {
    let text = |s: String| Secret::new(s.into_bytes());
    let ips: Vec<String> = issue.ip_sans.iter().map(|ip| ip.to_string()).collect();
    let mut fields = vec![
        ("csr", text(csr.to_string())),
        ("common_name", text(issue.common_name.clone())),
        ("format", text("pem".into())),
    ];
    for (key, value) in [
        ("alt_names", issue.alt_names.join(",")),
        ("uri_sans", issue.uri_sans.join(",")),
        ("ip_sans", ips.join(",")),
    ] {
        if !value.is_empty() {
            fields.push((key, text(value)));
        }
    }
    if let Some(ttl) = issue.ttl {
        fields.push(("ttl", text(format!("{}s", ttl.as_secs()))));
    }
    vault::login_body(&fields)
}

/// The chain of a sign answer, one PEM block each, leaf first: `data.certificate`, then
/// `ca_chain` (or `issuing_ca` when the engine gives no chain). Read as a
/// `serde_json::Value`, which the KV pull already reads, rather than a struct of its own
/// (docs/arm.md: each type serde reads is code).
fn parse_signed(body: &[u8]) -> Option<Vec<String>> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = answer.get("data")?;
    let certificate = data.get("certificate")?.as_str()?;
    if !certificate.contains("BEGIN CERTIFICATE") {
        return None;
    }
    let mut chain = vec![certificate.trim().to_string()];
    let listed = data.get("ca_chain").and_then(|c| c.as_array());
    let rest: Vec<&serde_json::Value> = match listed {
        Some(list) if !list.is_empty() => list.iter().collect(),
        _ => data.get("issuing_ca").into_iter().collect(),
    };
    for ca in rest.into_iter().filter_map(|c| c.as_str()) {
        if !ca.trim().is_empty() {
            chain.push(ca.trim().to_string());
        }
    }
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sign answer gives the leaf first, then the chain; one without a certificate is
    /// refused.
    #[test]
    fn sign_answer_is_parsed() {
        let leaf = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----";
        let ca = "-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----";
        let body = serde_json::json!({"data": {"certificate": leaf, "issuing_ca": ca}});
        let chain = parse_signed(body.to_string().as_bytes()).unwrap();
        assert_eq!(chain, [leaf, ca]);
        let body = serde_json::json!({"data": {"certificate": leaf, "issuing_ca": ca, "ca_chain": [ca, ca]}});
        let chain = parse_signed(body.to_string().as_bytes()).unwrap();
        assert_eq!(chain.len(), 3);
        assert!(parse_signed(br#"{"data":{"certificate":""}}"#).is_none());
        assert!(parse_signed(b"{}").is_none());
    }
}
