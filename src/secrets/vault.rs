//! HashiCorp Vault / OpenBao, KV version 2, over HTTPS.
//!
//! Authentication: a token (itself a local secret), AppRole (role id and secret id, local
//! secrets), or TLS certificate auth with the device's own certificate. A token obtained by
//! logging in is revoked (`auth/token/revoke-self`) as soon as the secrets are read: the
//! daemon needs it for one read per start or reload, and a live token left behind would
//! only be something to steal until its TTL ends. A refresh (`refresh_interval`) logs in
//! again each time for the same reason, rather than keeping a token alive between reads. A
//! token the operator provides is never revoked: it is not ours; the daemon renews it
//! instead ([`token_life`], driven by the daemon's refresh task).

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{Failure, Progress, PullError, Secret, Secrets, http::Client, retry};
use crate::config::{self, Vault, VaultAuth};

/// A client logged in to the store: the token it sends, and whether the token is ours to
/// revoke when done (one from a login) or the operator's.
struct Session {
    client: Client,
    token: Secret,
    revoke: bool,
    what: String,
}

impl Session {
    /// Makes the client and logs in as `vault.auth` says.
    async fn open(
        vault: &Vault,
        tls: &config::Tls,
        local: &Secrets,
        deadline: Instant,
        progress: Progress<'_>,
    ) -> Result<Session, PullError> {
        let identity = match &vault.auth {
            VaultAuth::Cert { cert, key, .. } => {
                let cert = cert.as_ref().unwrap_or(&tls.cert);
                let key = key.as_ref().unwrap_or(&tls.key);
                Some(device_identity(cert, key, local).map_err(PullError::Permanent)?)
            }
            _ => None,
        };
        let client = Client::new(
            &vault.addr,
            &vault.ca_cert,
            identity,
            vault.timeout,
            vault.namespace.clone(),
        )
        .map_err(permanent)?;
        let what = format!("vault {}", vault.addr);

        let (token, revoke) =
            log_in(&client, &vault.auth, local, &what, deadline, progress).await?;
        Ok(Session {
            client,
            token,
            revoke,
            what,
        })
    }

    /// A GET with the session's token, retried on transient failures until `deadline`.
    async fn get<T>(
        &self,
        path: &str,
        deadline: Instant,
        progress: Progress<'_>,
        parse: impl Fn(StatusCode, &[u8]) -> Result<T, Failure>,
    ) -> Result<T, PullError> {
        retry(&self.what, deadline, progress, || async {
            let response = self
                .client
                .request(Method::GET, path, Some(&self.token), None)
                .await?;
            parse(response.status, &response.body)
        })
        .await
    }

    /// Revokes a login token (best effort: it expires by its TTL anyway); never the
    /// operator's.
    async fn close(self) {
        if self.revoke {
            revoke_token(&self.client, &self.token).await;
        }
    }
}

/// Reads the KV entry once and returns the secrets `names` map to.
pub async fn pull(
    vault: &Vault,
    tls: &config::Tls,
    names: &[String],
    local: &Secrets,
    deadline: Instant,
    progress: Progress<'_>,
) -> Result<BTreeMap<String, Secret>, PullError> {
    let session = Session::open(vault, tls, local, deadline, progress).await?;
    let path = format!("/v1/{}/data/{}", vault.mount, vault.path);
    let read = session
        .get(&path, deadline, progress, |status, body| {
            parse_kv(check(status, body, &path)?)
                .ok_or_else(|| Failure::Permanent(format!("{path}: not a KV version 2 answer")))
        })
        .await;
    session.close().await;
    let mut data = read?;
    let mut secrets = BTreeMap::new();
    for name in names {
        let field = &vault.fields[name];
        let value = data.remove(field).ok_or_else(|| {
            PullError::Permanent(format!(
                "field `{field}` is not in {}/{} (or is not a string)",
                vault.mount, vault.path
            ))
        })?;
        secrets.insert(name.clone(), value);
    }
    Ok(secrets)
}

/// Logs in with `auth`; returns the token and whether it is ours to revoke once used (a
/// login's token is; a token the operator provides is not). The secrets pull and the PKI
/// issuer (`pki.rs`) both log in here; for cert auth, `client` carries the certificate.
pub(super) async fn log_in(
    client: &Client,
    auth: &VaultAuth,
    local: &Secrets,
    what: &str,
    deadline: Instant,
    progress: Progress<'_>,
) -> Result<(Secret, bool), PullError> {
    let cert = matches!(auth, VaultAuth::Cert { .. });
    let (path, body) = match auth {
        VaultAuth::Token { token } => return Ok((local_secret(local, token)?, false)),
        VaultAuth::AppRole {
            mount,
            role_id,
            secret_id,
        } => (
            format!("/v1/auth/{mount}/login"),
            login_body(&[
                ("role_id", local_secret(local, role_id)?),
                ("secret_id", local_secret(local, secret_id)?),
            ]),
        ),
        VaultAuth::Cert { mount, role, .. } => (
            format!("/v1/auth/{mount}/login"),
            match role {
                Some(role) => login_body(&[("name", Secret::new(role.as_bytes().to_vec()))]),
                None => Zeroizing::new(b"{}".to_vec()),
            },
        ),
    };
    let token = login(client, &path, body, cert, what, deadline, progress).await?;
    Ok((token, true))
}

/// Revokes a login token once it has served (best effort: it expires by its TTL anyway).
pub(super) async fn revoke_token(client: &Client, token: &Secret) {
    match client
        .request(
            Method::POST,
            "/v1/auth/token/revoke-self",
            Some(token),
            None,
        )
        .await
    {
        Ok(r) if r.status.is_success() => {}
        Ok(r) => tracing::warn!(
            status = r.status.as_u16(),
            "could not revoke the Vault login token; it will expire"
        ),
        Err(Failure::Transient(e) | Failure::Permanent(e)) => {
            tracing::warn!(reason = %e, "could not revoke the Vault login token; it will expire")
        }
    }
}

/// The entry's current version from its metadata (`/v1/MOUNT/metadata/PATH`), which
/// carries no value; `None` when the token may not read the metadata (403).
pub async fn version(
    vault: &Vault,
    tls: &config::Tls,
    local: &Secrets,
    deadline: Instant,
    progress: Progress<'_>,
) -> Result<Option<u64>, PullError> {
    let session = Session::open(vault, tls, local, deadline, progress).await?;
    let path = format!("/v1/{}/metadata/{}", vault.mount, vault.path);
    // One try: a refresh that fails tries again at its next turn.
    let read = async {
        let response = session
            .client
            .request(Method::GET, &path, Some(&session.token), None)
            .await?;
        if response.status == StatusCode::FORBIDDEN {
            return Ok(None);
        }
        serde_json::from_slice::<serde_json::Value>(check(response.status, &response.body, &path)?)
            .ok()
            .and_then(|m| m["data"]["current_version"].as_u64())
            .map(Some)
            .ok_or_else(|| {
                Failure::Permanent(format!("{path}: not a KV version 2 metadata answer"))
            })
    }
    .await;
    session.close().await;
    read.map_err(permanent)
}

/// What the store says of a token: how long it has left and whether it can be renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLife {
    /// Zero: it does not expire (a root or periodic-less non-expiring token).
    pub ttl: std::time::Duration,
    pub renewable: bool,
}

/// Looks the operator's token up (`auth/token/lookup-self`), or renews it
/// (`auth/token/renew-self`, by its own period or TTL) when `renew`.
pub async fn token_life(vault: &Vault, token: &Secret, renew: bool) -> Result<TokenLife, Failure> {
    let client = Client::new(
        &vault.addr,
        &vault.ca_cert,
        None,
        vault.timeout,
        vault.namespace.clone(),
    )?;
    let (method, path, body) = if renew {
        (
            Method::POST,
            "/v1/auth/token/renew-self",
            Some(Zeroizing::new(b"{}".to_vec())),
        )
    } else {
        (Method::GET, "/v1/auth/token/lookup-self", None)
    };
    let response = client.request(method, path, Some(token), body).await?;
    let body = check(response.status, &response.body, path)?;
    // lookup-self answers `data.ttl`, renew-self `auth.lease_duration`.
    let answer: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let (part, ttl) = if renew {
        (&answer["auth"], "lease_duration")
    } else {
        (&answer["data"], "ttl")
    };
    let ttl = part[ttl]
        .as_u64()
        .ok_or_else(|| Failure::Permanent(format!("{path}: not a token answer")))?;
    Ok(TokenLife {
        // Bounded where it enters: whatever the store says, times computed from it stay
        // representable (a TTL of 2^64-1 s once overflowed `Instant + Duration`).
        ttl: std::time::Duration::from_secs(ttl.min(MAX_TOKEN_TTL_SECS)),
        renewable: part["renewable"].as_bool().unwrap_or(false),
    })
}

/// The longest token TTL believed: 100 years (Vault's own ceiling is its max lease TTL,
/// 32 days by default); a longer one is taken as this.
const MAX_TOKEN_TTL_SECS: u64 = 100 * 365 * 86_400;

pub(super) fn permanent(failure: Failure) -> PullError {
    match failure {
        Failure::Permanent(reason) | Failure::Transient(reason) => PullError::Permanent(reason),
    }
}

fn local_secret(local: &Secrets, name: &str) -> Result<Secret, PullError> {
    local
        .get(name)
        .cloned()
        .ok_or_else(|| PullError::Permanent(format!("the login secret `{name}` was not found")))
}

/// The device's certificate and key, for cert auth.
pub(super) fn device_identity(
    cert: &std::path::Path,
    key: &config::Material,
    local: &Secrets,
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    String,
> {
    let chain = crate::tls::load_certs(cert).map_err(|e| e.to_string())?;
    let key = local.key(key).map_err(|e| e.to_string())?;
    Ok((chain, key.der))
}

/// `{"k": "v", ...}` built in zeroized memory (string values only; the pki sign request
/// is built here too, without serde_json's serializer).
pub(super) fn login_body(fields: &[(&str, Secret)]) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(Vec::with_capacity(256));
    body.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"\"");
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(b"\":\"");
        for &b in value.expose() {
            match b {
                b'"' => body.extend_from_slice(b"\\\""),
                b'\\' => body.extend_from_slice(b"\\\\"),
                0..=0x1f => body.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
                _ => body.push(b),
            }
        }
        body.push(b'"');
    }
    body.push(b'}');
    body
}

async fn login(
    client: &Client,
    path: &str,
    body: Zeroizing<Vec<u8>>,
    cert: bool,
    what: &str,
    deadline: Instant,
    progress: Progress<'_>,
) -> Result<Secret, PullError> {
    #[derive(Deserialize)]
    struct Login {
        auth: Option<Auth>,
    }
    #[derive(Deserialize)]
    struct Auth {
        client_token: String,
    }
    retry(what, deadline, progress, || async {
        let response = client
            .request(Method::POST, path, None, Some(body.clone()))
            .await?;
        let response = check_login(response.status, &response.body, path, cert)?;
        let login: Login = serde_json::from_slice(response)
            .map_err(|_| Failure::Permanent(format!("{path}: not a login answer")))?;
        let token = login
            .auth
            .ok_or_else(|| Failure::Permanent(format!("{path}: the answer has no token")))?
            .client_token;
        Ok(Secret::new(token.into_bytes()))
    })
    .await
}

/// Sorts a response by status: 2xx is the body, 429 and 5xx are worth retrying, the rest
/// (403 permission denied, 404 no such path, 400 bad request) are final.
pub(super) fn check<'a>(
    status: StatusCode,
    body: &'a [u8],
    path: &str,
) -> Result<&'a [u8], Failure> {
    if status.is_success() {
        return Ok(body);
    }
    let said = engine_errors(body);
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    let reason = match status {
        StatusCode::NOT_FOUND => format!("no secret at {path} (HTTP 404){said}"),
        StatusCode::FORBIDDEN => format!("permission denied for {path} (HTTP 403){said}"),
        _ => format!("HTTP {} for {path}{said}", status.as_u16()),
    };
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(Failure::Transient(reason))
    } else {
        Err(Failure::Permanent(reason))
    }
}

/// [`check`] for a login: with cert auth, a 500 whose reason is about the certificate is
/// the engine refusing it, not an outage. Vault and OpenBao answer 500 when Go's chain
/// verification fails ("failed to verify client's certificate: x509: certificate
/// specifies an incompatible key usage", for one without clientAuth): retrying that until
/// the deadline, or until the certificate expires, only delays the fallback.
fn check_login<'a>(
    status: StatusCode,
    body: &'a [u8],
    path: &str,
    cert: bool,
) -> Result<&'a [u8], Failure> {
    match check(status, body, path) {
        Err(Failure::Transient(_)) if cert && status == StatusCode::INTERNAL_SERVER_ERROR => {
            let said = engine_errors(body);
            if said.contains("certificate") || said.contains("x509:") {
                Err(Failure::Permanent(format!(
                    "cert auth refused the certificate (HTTP 500 for {path}): {said}"
                )))
            } else {
                check(status, body, path)
            }
        }
        checked => checked,
    }
}

/// The engine's `errors` of an answer, joined; empty when it gave none.
fn engine_errors(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    serde_json::from_slice::<Errors>(body)
        .map(|e| e.errors.join("; "))
        .unwrap_or_default()
}

/// The string fields of a KV v2 answer (`data.data`), each in a [`Secret`].
fn parse_kv(body: &[u8]) -> Option<BTreeMap<String, Secret>> {
    #[derive(Deserialize)]
    struct Outer {
        data: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        data: BTreeMap<String, serde_json::Value>,
    }
    let outer: Outer = serde_json::from_slice(body).ok()?;
    Some(
        outer
            .data
            .data
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, Secret::new(s.into_bytes()))),
                _ => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Login bodies escape quotes, backslashes and control characters.
    #[test]
    fn login_body_escapes() {
        let body = login_body(&[
            ("a", Secret::new(b"x\"y\\z\n".to_vec())),
            ("b", Secret::new(b"2".to_vec())),
        ]);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["a"], "x\"y\\z\n");
        assert_eq!(parsed["b"], "2");
    }

    /// 429 and 5xx are transient; 403 and 404 are final, with Vault's own words.
    #[test]
    fn statuses_are_sorted() {
        let body = br#"{"errors":["permission denied"]}"#;
        assert!(matches!(
            check(StatusCode::SERVICE_UNAVAILABLE, b"", "/p"),
            Err(Failure::Transient(_))
        ));
        assert!(matches!(
            check(StatusCode::TOO_MANY_REQUESTS, b"", "/p"),
            Err(Failure::Transient(_))
        ));
        match check(StatusCode::FORBIDDEN, body, "/p") {
            Err(Failure::Permanent(reason)) => assert_eq!(
                reason,
                "permission denied for /p (HTTP 403): permission denied"
            ),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(matches!(
            check(StatusCode::NOT_FOUND, b"{}", "/p"),
            Err(Failure::Permanent(_))
        ));
        assert_eq!(check(StatusCode::OK, b"x", "/p").unwrap(), b"x");
    }

    /// A cert auth login answered 500 about the certificate is a refusal, with the engine's
    /// words; a 500 about anything else, or on another login, stays an outage.
    #[test]
    fn a_cert_login_refused_with_500_is_a_refusal() {
        let path = "/v1/auth/cert/login";
        let eku = br#"{"errors":["failed to verify client's certificate: x509: certificate specifies an incompatible key usage"]}"#;
        match check_login(StatusCode::INTERNAL_SERVER_ERROR, eku, path, true) {
            Err(Failure::Permanent(reason)) => assert_eq!(
                reason,
                "cert auth refused the certificate (HTTP 500 for /v1/auth/cert/login): failed to verify client's certificate: x509: certificate specifies an incompatible key usage"
            ),
            other => panic!("{:?}", other.map(|_| ())),
        }
        let storage = br#"{"errors":["local node not active but active cluster node not found"]}"#;
        for (body, cert) in [(&storage[..], true), (&eku[..], false), (b"", true)] {
            assert!(matches!(
                check_login(StatusCode::INTERNAL_SERVER_ERROR, body, path, cert),
                Err(Failure::Transient(_))
            ));
        }
        assert!(matches!(
            check_login(StatusCode::SERVICE_UNAVAILABLE, eku, path, true),
            Err(Failure::Transient(_))
        ));
    }

    /// Only string fields of data.data become secrets.
    #[test]
    fn kv_answer_is_parsed() {
        let body = br#"{"data":{"data":{"k":"v","n":3},"metadata":{}}}"#;
        let kv = parse_kv(body).unwrap();
        assert_eq!(kv["k"].expose(), b"v");
        assert!(!kv.contains_key("n"));
        assert!(parse_kv(b"{}").is_none());
    }
}
