//! HashiCorp Vault / OpenBao, KV version 2, over HTTPS.
//!
//! Authentication: a token (itself a local secret), AppRole (role id and secret id, local
//! secrets), or TLS certificate auth with the device's own certificate. A token obtained by
//! logging in is revoked (`auth/token/revoke-self`) as soon as the secrets are read: the
//! daemon needs it for one read per start or reload, and a live token left behind would
//! only be something to steal until its TTL ends. A token the operator provides is never
//! revoked: it is not ours.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{Failure, Progress, PullError, Secret, Secrets, http::Client, retry};
use crate::config::{self, Vault, VaultAuth};

/// Reads the KV entry once and returns the secrets `names` map to.
pub async fn pull(
    vault: &Vault,
    tls: &config::Tls,
    names: &[String],
    local: &Secrets,
    deadline: Instant,
    progress: Progress<'_>,
) -> Result<BTreeMap<String, Secret>, PullError> {
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

    let (token, revoke) = log_in(&client, &vault.auth, local, &what, deadline, progress).await?;

    let path = format!("/v1/{}/data/{}", vault.mount, vault.path);
    let read = retry(&what, deadline, progress, || async {
        let response = client
            .request(Method::GET, &path, Some(&token), None)
            .await?;
        let response = check(response.status, &response.body, &path)?;
        parse_kv(response)
            .ok_or_else(|| Failure::Permanent(format!("{path}: not a KV version 2 answer")))
    })
    .await;
    if revoke {
        revoke_token(&client, &token).await;
    }
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
    let token = login(client, &path, body, what, deadline, progress).await?;
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
        let response = check(response.status, &response.body, path)?;
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
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let said = serde_json::from_slice::<Errors>(body)
        .map(|e| e.errors.join("; "))
        .unwrap_or_default();
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
