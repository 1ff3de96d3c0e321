//! The server certificate from a Vault or OpenBao `pki` engine: a P-256 key made here, a
//! CSR for it signed by `POST /v1/{mount}/sign/{role}`. The private key never leaves the
//! device (sign, not issue: the engine sees only the CSR, so it never holds the key).
//!
//! Login is the secrets pull's ([`super::vault::log_in`]): cert auth with the current
//! certificate, AppRole or a token. With cert auth and no certificate that can still log
//! in (none yet, or it expired while the device was off), the AppRole `fallback` logs in
//! instead, and the log says so.

use std::{path::Path, time::SystemTime};

use http::Method;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{
    Failure, Progress, PullError, Secrets,
    http::Client,
    retry,
    vault::{self, check},
};
use crate::config::{Issue, Material, VaultAuth};

/// A certificate the engine signed, with the key made for it.
pub struct Issued {
    /// The key (PKCS#8), then the chain, leaf first: the state directory's one file.
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
    let (key, csr) = key_and_csr(issue).map_err(refused)?;
    let (token, revoke) = vault::log_in(&client, auth, local, &what, deadline, progress)
        .await
        .map_err(failed)?;
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
    let chain = signed.map_err(failed)?;
    let leaf = rustls::pki_types::CertificateDer::from_pem_slice(chain.as_bytes())
        .map_err(|e| refused(format!("{path}: the certificate does not parse: {e}")))?;
    let (Some(not_before), Some(not_after), Some(serial)) = (
        crate::der::not_before(&leaf),
        crate::der::not_after(&leaf),
        crate::der::serial(&leaf),
    ) else {
        return Err(refused(format!(
            "{path}: the certificate's validity or serial does not parse"
        )));
    };
    let mut pem = Zeroizing::new(String::with_capacity(key.len() + chain.len() + 1));
    pem.push_str(&key);
    pem.push_str(&chain);
    Ok(Issued {
        pem,
        serial,
        not_before,
        not_after,
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
            tracing::warn!(
                reason = %why,
                "cert auth cannot log in: logging in with the fallback AppRole (tls.issue.fallback)"
            );
            Ok(fallback)
        }
        None => Err(format!(
            "cert auth cannot log in: {why}; set tls.issue.fallback = \"approle\" (with role_id and secret_id) so the device can get a new one"
        )),
    }
}

/// A new P-256 key (PKCS#8 PEM) and a CSR (PEM) for it naming the CN and the SANs.
fn key_and_csr(issue: &Issue) -> Result<(Zeroizing<String>, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("making a key: {e}"))?;
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
    Ok((Zeroizing::new(key.serialize_pem()), csr))
}

/// The sign request: the CSR, and the names again as fields (a role with
/// `use_csr_sans = false` takes them from there).
fn sign_body(issue: &Issue, csr: &str) -> Zeroizing<Vec<u8>> {
    let join = |names: &[String]| names.join(",");
    let ips: Vec<String> = issue.ip_sans.iter().map(|ip| ip.to_string()).collect();
    let mut body = serde_json::json!({
        "csr": csr,
        "common_name": issue.common_name,
        "format": "pem",
    });
    for (key, value) in [
        ("alt_names", join(&issue.alt_names)),
        ("uri_sans", join(&issue.uri_sans)),
        ("ip_sans", ips.join(",")),
    ] {
        if !value.is_empty() {
            body[key] = value.into();
        }
    }
    if let Some(ttl) = issue.ttl {
        body["ttl"] = format!("{}s", ttl.as_secs()).into();
    }
    Zeroizing::new(body.to_string().into_bytes())
}

/// The chain of a sign answer as PEM, leaf first: `data.certificate`, then `ca_chain` (or
/// `issuing_ca` when the engine gives no chain).
fn parse_signed(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Outer {
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        certificate: String,
        #[serde(default)]
        issuing_ca: String,
        #[serde(default)]
        ca_chain: Vec<String>,
    }
    let data = serde_json::from_slice::<Outer>(body).ok()?.data;
    if !data.certificate.contains("BEGIN CERTIFICATE") {
        return None;
    }
    let mut chain = data.certificate.trim().to_string();
    chain.push('\n');
    let rest = if data.ca_chain.is_empty() {
        vec![data.issuing_ca]
    } else {
        data.ca_chain
    };
    for ca in rest.iter().filter(|c| !c.trim().is_empty()) {
        chain.push_str(ca.trim());
        chain.push('\n');
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
        assert_eq!(chain, format!("{leaf}\n{ca}\n"));
        let body = serde_json::json!({"data": {"certificate": leaf, "issuing_ca": ca, "ca_chain": [ca, ca]}});
        let chain = parse_signed(body.to_string().as_bytes()).unwrap();
        assert_eq!(chain.matches("BEGIN").count(), 3);
        assert!(parse_signed(br#"{"data":{"certificate":""}}"#).is_none());
        assert!(parse_signed(b"{}").is_none());
    }
}
