//! Authorization on top of mutual TLS: who may call what, and per-RPC bearer credentials.
//!
//! The caller's identity comes from its verified certificate ([`crate::tls::identity`]).
//! A [`Policy`], built from `[auth]` and the pulled secrets, decides each call:
//!
//! 1. Methods that require a bearer token (`[[auth.bearer]]`) need `authorization: Bearer
//!    …`: an opaque token compared in constant time with the configured ones, or a JWT
//!    whose signature (HS256 or ES256, the algorithm taken from config, never from the
//!    token), `exp`, `nbf`, `iss` and `aud` check out. Missing or bad: UNAUTHENTICATED.
//! 2. Then the ACL: `auth.public` methods are open to any verified client; everything else
//!    needs an `[[auth.rules]]` entry matching the identity. Not allowed: PERMISSION_DENIED.
//!
//! Every call to an `auth.audit` method is one audit line, and so is every denial, at most
//! one a second per identity with a summary of those held back ([`Auditor`]; target
//! `vitals::audit`; journald fields AUDIT_DECISION, AUDIT_IDENTITY, AUDIT_METHOD,
//! AUDIT_REASON). No token or secret is ever logged.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use base64::Engine;
use ring::{digest, hmac, signature};
use serde::Deserialize;
use tonic::Code;

use crate::{
    config::{self, BearerKind},
    rpc_stats::RpcStats,
    secrets::Secrets,
    throttle::Throttle,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("auth.bearer: secret `{0}` was not pulled")]
    MissingSecret(String),
    #[error("auth.bearer: secret `{name}` is not {expected}")]
    BadKey {
        name: String,
        expected: &'static str,
    },
    #[error(
        "auth.bearer: secret `{name}` is {len} bytes; an HS256 key needs at least {MIN_HMAC_KEY} (RFC 7518 3.2)"
    )]
    ShortKey { name: String, len: usize },
}

/// The shortest HS256 key accepted: the size of its hash output (RFC 7518, section 3.2).
pub const MIN_HMAC_KEY: usize = 32;

/// A method pattern: `/pkg.Service/Method` exactly, `/pkg.Service/` as a prefix, a page's
/// path (`/metrics`), or all.
#[derive(Debug, Clone)]
struct Pattern(String);

impl Pattern {
    /// From config syntax: `pkg.Service/Method`, `pkg.Service/*`, `/metrics` or `*`
    /// (already validated).
    fn new(config: &str) -> Pattern {
        match config {
            "*" => Pattern(String::new()),
            page if page.starts_with('/') => Pattern(page.to_owned()),
            p => Pattern(format!("/{}", p.trim_end_matches('*'))),
        }
    }

    fn matches(&self, path: &str) -> bool {
        if self.0.ends_with('/') || self.0.is_empty() {
            path.starts_with(&self.0)
        } else {
            path == self.0
        }
    }
}

#[derive(Debug, Clone)]
enum Identity {
    Any,
    Exact(String),
    Prefix(String),
}

impl Identity {
    fn new(config: &str) -> Identity {
        match config.strip_suffix('*') {
            Some("") => Identity::Any,
            Some(prefix) => Identity::Prefix(prefix.to_string()),
            None => Identity::Exact(config.to_string()),
        }
    }

    /// A prefix matches whole path segments: `spiffe://fleet/ops*` matches
    /// `spiffe://fleet/ops` and everything under `spiffe://fleet/ops/`, never
    /// `spiffe://fleet/opsevil`; `spiffe://fleet/ops/*` only what is under it.
    fn matches(&self, identity: &str) -> bool {
        match self {
            Identity::Any => true,
            Identity::Exact(exact) => identity == exact,
            Identity::Prefix(prefix) => {
                identity.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                    rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/')
                })
            }
        }
    }
}

#[derive(Debug)]
struct Rule {
    identities: Vec<Identity>,
    methods: Vec<Pattern>,
}

struct Bearer {
    methods: Vec<Pattern>,
    check: Check,
}

enum Check {
    /// SHA-256 digests of the accepted tokens: compared in constant time, and no token
    /// kept in memory.
    Opaque(Vec<[u8; 32]>),
    Jwt(Box<Jwt>),
}

struct Jwt {
    algorithm: &'static str,
    key: JwtKey,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

enum JwtKey {
    Hmac(hmac::Key),
    /// An uncompressed P-256 point.
    Ec(Vec<u8>),
}

/// What the policy says of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        /// An `auth.audit` method: log the call.
        audit: bool,
    },
    Deny {
        code: Code,
        reason: String,
    },
}

/// The rules every call is checked against; rebuilt on reload.
pub struct Policy {
    public: Vec<Pattern>,
    audit: Vec<Pattern>,
    rules: Vec<Rule>,
    bearer: Vec<Bearer>,
}

/// Longest bearer token looked at.
const MAX_TOKEN: usize = 8192;

fn digest32(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equal in time independent of where they differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Policy {
    pub fn new(auth: &config::Auth, secrets: &Secrets) -> Result<Policy, Error> {
        let secret = |name: &str| {
            secrets
                .get(name)
                .ok_or_else(|| Error::MissingSecret(name.to_string()))
        };
        let mut bearer = Vec::new();
        for b in &auth.bearer {
            let check = match &b.kind {
                BearerKind::Opaque { tokens } => Check::Opaque(
                    tokens
                        .iter()
                        .map(|name| secret(name).map(|s| digest32(s.expose())))
                        .collect::<Result<_, _>>()?,
                ),
                BearerKind::Jwt {
                    algorithm,
                    key,
                    issuer,
                    audience,
                    leeway,
                } => {
                    let material = secret(key)?;
                    let key = match algorithm {
                        config::JwtAlgorithm::Hs256 => {
                            let len = material.expose().len();
                            if len < MIN_HMAC_KEY {
                                return Err(Error::ShortKey {
                                    name: key.clone(),
                                    len,
                                });
                            }
                            JwtKey::Hmac(hmac::Key::new(hmac::HMAC_SHA256, material.expose()))
                        }
                        config::JwtAlgorithm::Es256 => {
                            JwtKey::Ec(ec_point(material.expose()).ok_or_else(|| {
                                Error::BadKey {
                                    name: key.clone(),
                                    expected: "a PEM P-256 public key (BEGIN PUBLIC KEY)",
                                }
                            })?)
                        }
                    };
                    Check::Jwt(Box::new(Jwt {
                        algorithm: algorithm.name(),
                        key,
                        issuer: issuer.clone(),
                        audience: audience.clone(),
                        leeway: *leeway,
                    }))
                }
            };
            bearer.push(Bearer {
                methods: b.methods.iter().map(|m| Pattern::new(m)).collect(),
                check,
            });
        }
        Ok(Policy {
            public: auth.public.iter().map(|m| Pattern::new(m)).collect(),
            audit: auth.audit.iter().map(|m| Pattern::new(m)).collect(),
            rules: auth
                .rules
                .iter()
                .map(|r| Rule {
                    identities: r.identities.iter().map(|i| Identity::new(i)).collect(),
                    methods: r.methods.iter().map(|m| Pattern::new(m)).collect(),
                })
                .collect(),
            bearer,
        })
    }

    /// Decides a call to `path` by `identity` (None on the plaintext listener) with this
    /// `authorization` header value.
    pub fn decide(
        &self,
        path: &str,
        identity: Option<&str>,
        authorization: Option<&[u8]>,
        now: SystemTime,
    ) -> Decision {
        for bearer in self
            .bearer
            .iter()
            .filter(|b| b.methods.iter().any(|m| m.matches(path)))
        {
            if let Err(reason) = bearer.check(authorization, now) {
                return Decision::Deny {
                    code: Code::Unauthenticated,
                    reason,
                };
            }
        }
        let public = self.public.iter().any(|m| m.matches(path));
        let granted = || {
            identity.is_some_and(|id| {
                self.rules.iter().any(|r| {
                    r.identities.iter().any(|i| i.matches(id))
                        && r.methods.iter().any(|m| m.matches(path))
                })
            })
        };
        if public || granted() {
            return Decision::Allow {
                audit: self.audit.iter().any(|m| m.matches(path)),
            };
        }
        Decision::Deny {
            code: Code::PermissionDenied,
            reason: match identity {
                Some(_) => "no auth rule grants this identity this method".to_string(),
                None => "only public methods are served without a client certificate".to_string(),
            },
        }
    }
}

impl Bearer {
    /// Ok when the header carries an acceptable token; the reason otherwise (never the token).
    fn check(&self, authorization: Option<&[u8]>, now: SystemTime) -> Result<(), String> {
        let header = authorization.ok_or("this method needs `authorization: Bearer <token>`")?;
        let token = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or("the authorization header is not `Bearer <token>`")?;
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err("the bearer token is empty or too long".into());
        }
        match &self.check {
            Check::Opaque(accepted) => {
                let presented = digest32(token);
                // Compare with every accepted token, so time does not tell which one matched.
                let matched = accepted
                    .iter()
                    .fold(false, |found, a| found | constant_time_eq(a, &presented));
                matched
                    .then_some(())
                    .ok_or_else(|| "the bearer token is not valid".into())
            }
            Check::Jwt(jwt) => jwt.verify(token, now),
        }
    }
}

fn b64(part: &[u8]) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| "the JWT is not base64url".to_string())
}

impl Jwt {
    fn verify(&self, token: &[u8], now: SystemTime) -> Result<(), String> {
        let mut parts = token.split(|&b| b == b'.');
        let (Some(header), Some(claims), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the bearer token is not a JWT (header.claims.signature)".into());
        };
        #[derive(Deserialize)]
        struct Header {
            alg: String,
        }
        let header_json: Header = serde_json::from_slice(&b64(header)?)
            .map_err(|_| "the JWT header is not JSON with `alg`")?;
        // The algorithm is the configured one; the token's claim is only checked against it,
        // so `none` and an ES256-to-HS256 switch are refused here.
        if header_json.alg != self.algorithm {
            return Err(format!(
                "the JWT is signed with `{}`, this method accepts only {}",
                header_json.alg.chars().take(16).collect::<String>(),
                self.algorithm
            ));
        }
        let signed = &token[..header.len() + 1 + claims.len()];
        let sig = b64(sig)?;
        let valid = match &self.key {
            JwtKey::Hmac(key) => hmac::verify(key, signed, &sig).is_ok(),
            JwtKey::Ec(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, &sig)
                    .is_ok()
            }
        };
        if !valid {
            return Err("the JWT signature does not verify".into());
        }
        #[derive(Deserialize)]
        struct Claims {
            exp: Option<f64>,
            nbf: Option<f64>,
            iss: Option<String>,
            aud: Option<Audience>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Audience {
            One(String),
            Many(Vec<String>),
        }
        let claims: Claims = serde_json::from_slice(&b64(claims)?)
            .map_err(|_| "the JWT claims are not valid JSON")?;
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let leeway = self.leeway.as_secs_f64();
        let exp = claims.exp.ok_or("the JWT has no `exp`")?;
        if now > exp + leeway {
            return Err("the JWT has expired".into());
        }
        if let Some(nbf) = claims.nbf
            && now + leeway < nbf
        {
            return Err("the JWT is not valid yet (`nbf`)".into());
        }
        if let Some(issuer) = &self.issuer
            && claims.iss.as_deref() != Some(issuer)
        {
            return Err("the JWT issuer (`iss`) is not the expected one".into());
        }
        if let Some(audience) = &self.audience {
            let ok = match &claims.aud {
                Some(Audience::One(a)) => a == audience,
                Some(Audience::Many(all)) => all.iter().any(|a| a == audience),
                None => false,
            };
            if !ok {
                return Err("the JWT audience (`aud`) does not include this server".into());
            }
        }
        Ok(())
    }
}

/// The uncompressed point of a PEM P-256 SubjectPublicKeyInfo.
fn ec_point(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::{SubjectPublicKeyInfoDer, pem::PemObject};
    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).ok()?;
    crate::x509::p256_point(der.as_ref())
}

/// Writes the audit lines of decisions: every call to an `auth.audit` method, and every
/// denial, at most one a second per identity. The first denial after a quiet second
/// follows a summary line of the ones held back (`suppressed=N`, by status code), and
/// held-back lines are counted in `Snapshot.server.audit_lines_suppressed`, so a flood of
/// denied calls cannot drown the other audit events in journald.
pub struct Auditor {
    stats: Arc<RpcStats>,
    /// A Vec, not a map: denials are rare, and no hasher to link.
    by_identity: Mutex<Vec<(String, Arc<Throttle>)>>,
    /// Shared by the identities past [`MAX_AUDITED_IDENTITIES`].
    others: Arc<Throttle>,
}

/// The line that says how many denial lines of `identity` were held back, and why.
fn summary(identity: &str, held: &crate::throttle::Held) {
    tracing::warn!(
        target: "vitals::audit",
        audit_decision = "suppressed",
        audit_identity = identity,
        suppressed = held.total(),
        suppressed_reasons = %held,
        "audit: suppressed {} denial lines for {identity} ({held})",
        held.total()
    );
}

/// Identities with a denial rate limit of their own (a CA issues a fleet's worth).
const MAX_AUDITED_IDENTITIES: usize = 1024;

impl Auditor {
    pub fn new(stats: Arc<RpcStats>) -> Auditor {
        Auditor {
            stats,
            by_identity: Mutex::default(),
            others: Arc::new(Throttle::every(Duration::from_secs(1))),
        }
    }

    fn throttle(&self, identity: &str) -> Arc<Throttle> {
        let mut map = self.by_identity.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, t)) = map.iter().find(|(i, _)| i == identity) {
            return t.clone();
        }
        if map.len() >= MAX_AUDITED_IDENTITIES {
            return self.others.clone();
        }
        let t = Arc::new(Throttle::every(Duration::from_secs(1)));
        map.push((identity.to_string(), t.clone()));
        t
    }

    /// Writes the summary line of every identity whose held-back denials no later denial
    /// reported (the flood stopped).
    pub fn flush(&self) {
        let map = self.by_identity.lock().unwrap_or_else(|e| e.into_inner());
        let others = std::iter::once(("others", &self.others));
        for (identity, throttle) in map.iter().map(|(i, t)| (i.as_str(), t)).chain(others) {
            if let Some(held) = throttle.flush() {
                summary(identity, &held);
            }
        }
    }

    /// Writes the audit line of a decision, if it has one and the rate allows.
    pub fn record(
        &self,
        decision: &Decision,
        path: &str,
        identity: Option<&str>,
        request_id: &str,
    ) {
        let identity = identity.unwrap_or("-");
        match decision {
            Decision::Allow { audit: true } => tracing::info!(
                target: "vitals::audit",
                audit_decision = "allow",
                audit_identity = identity,
                audit_method = path,
                audit_reason = "audited method",
                request_id,
                "audit: allowed {path} for {identity}"
            ),
            Decision::Allow { audit: false } => {}
            Decision::Deny { code, reason } => {
                let code = crate::rpc_stats::code_name(*code);
                let Some(held) = self.throttle(identity).allow(code) else {
                    (self.stats.server.audit_lines_suppressed)
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                };
                if held.total() > 0 {
                    summary(identity, &held);
                }
                tracing::warn!(
                    target: "vitals::audit",
                    audit_decision = "deny",
                    audit_identity = identity,
                    audit_method = path,
                    audit_reason = reason.as_str(),
                    audit_code = code,
                    request_id,
                    "audit: denied {path} for {identity}: {reason}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Auth, BearerConfig, BearerKind, JwtAlgorithm, RuleConfig};

    fn auth(rules: Vec<RuleConfig>, bearer: Vec<BearerConfig>) -> Auth {
        Auth {
            public: vec!["grpc.health.v1.Health/*".into()],
            audit: vec!["vitals.metrics.v1.Metrics/Snapshot".into()],
            rules,
            bearer,
        }
    }

    fn rule(identities: &[&str], methods: &[&str]) -> RuleConfig {
        RuleConfig {
            identities: identities.iter().map(|s| s.to_string()).collect(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
        }
    }

    const ECHO: &str = "/vitals.echo.v1.Echo/Echo";
    const SNAPSHOT: &str = "/vitals.metrics.v1.Metrics/Snapshot";
    const HEALTH: &str = "/grpc.health.v1.Health/Check";

    fn denied(d: Decision) -> Code {
        match d {
            Decision::Deny { code, .. } => code,
            other => panic!("allowed: {other:?}"),
        }
    }

    /// Public methods are open; others need a rule; prefixes and exact identities match.
    #[test]
    fn acl_rules() {
        let policy = Policy::new(
            &auth(
                vec![
                    rule(&["spiffe://fleet/ops/*"], &["*"]),
                    rule(&["spiffe://fleet/prober"], &["vitals.echo.v1.Echo/Echo"]),
                ],
                vec![],
            ),
            &Secrets::default(),
        )
        .unwrap();
        let now = SystemTime::now();
        let allow = Decision::Allow { audit: false };
        assert_eq!(policy.decide(HEALTH, Some("anyone"), None, now), allow);
        assert_eq!(policy.decide(HEALTH, None, None, now), allow);
        assert_eq!(
            policy.decide(ECHO, Some("spiffe://fleet/prober"), None, now),
            allow
        );
        assert_eq!(
            denied(policy.decide(SNAPSHOT, Some("spiffe://fleet/prober"), None, now)),
            Code::PermissionDenied
        );
        assert_eq!(
            policy.decide(SNAPSHOT, Some("spiffe://fleet/ops/alice"), None, now),
            Decision::Allow { audit: true }
        );
        assert_eq!(
            denied(policy.decide(ECHO, Some("spiffe://fleet/prober2"), None, now)),
            Code::PermissionDenied
        );
        assert_eq!(
            denied(policy.decide(ECHO, None, None, now)),
            Code::PermissionDenied
        );
    }

    /// Method patterns: exact, service prefix, a page's path, everything.
    #[test]
    fn patterns() {
        assert!(Pattern::new("vitals.echo.v1.Echo/*").matches(ECHO));
        assert!(!Pattern::new("vitals.echo.v1.Echo/*").matches("/vitals.echo.v1.EchoX/Echo"));
        assert!(Pattern::new("vitals.echo.v1.Echo/Echo").matches(ECHO));
        assert!(
            !Pattern::new("vitals.echo.v1.Echo/Echo").matches("/vitals.echo.v1.Echo/EchoStream")
        );
        assert!(Pattern::new("*").matches("/anything/at all"));
        assert!(
            Pattern::new("*").matches("/metrics"),
            "`*` covers the pages"
        );
        assert!(Pattern::new("/metrics").matches("/metrics"));
        assert!(!Pattern::new("/metrics").matches("/metrics/x"));
        assert!(!Pattern::new("vitals.metrics.v1.Metrics/*").matches("/metrics"));
    }

    fn b64url(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(key: &[u8], header: &str, claims: &str) -> String {
        let signing = format!(
            "{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes())
        );
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), signing.as_bytes());
        format!("{signing}.{}", b64url(tag.as_ref()))
    }

    fn jwt_policy(algorithm: JwtAlgorithm, key: &[u8]) -> Policy {
        let mut secrets = std::collections::BTreeMap::new();
        secrets.insert("k".to_string(), crate::secrets::Secret::new(key.to_vec()));
        let bearer = BearerConfig {
            methods: vec!["vitals.echo.v1.Echo/*".into()],
            kind: BearerKind::Jwt {
                algorithm,
                key: "k".into(),
                issuer: Some("iss-1".into()),
                audience: Some("vitalsd".into()),
                leeway: Duration::from_secs(30),
            },
        };
        Policy::new(
            &auth(vec![rule(&["*"], &["*"])], vec![bearer]),
            &Secrets::from_map(secrets),
        )
        .unwrap()
    }

    /// An HS256 key of the shortest length accepted.
    const KEY32: &[u8] = b"a-shared-key-of-thirty-two-bytes";

    /// HS256 keys shorter than 32 bytes (an empty one, as a file holding only a newline
    /// becomes once trimmed) are refused when the policy is built, naming the secret only.
    #[test]
    fn short_hmac_keys_are_refused() {
        assert_eq!(KEY32.len(), MIN_HMAC_KEY);
        for key in [&b""[..], b"k", &KEY32[1..]] {
            let mut secrets = std::collections::BTreeMap::new();
            secrets.insert("k".to_string(), crate::secrets::Secret::new(key.to_vec()));
            let bearer = BearerConfig {
                methods: vec!["*".into()],
                kind: BearerKind::Jwt {
                    algorithm: JwtAlgorithm::Hs256,
                    key: "k".into(),
                    issuer: None,
                    audience: None,
                    leeway: Duration::ZERO,
                },
            };
            let err = Policy::new(&auth(vec![], vec![bearer]), &Secrets::from_map(secrets))
                .err()
                .expect("a short key is refused");
            assert_eq!(
                err.to_string(),
                format!(
                    "auth.bearer: secret `k` is {} bytes; an HS256 key needs at least 32 (RFC 7518 3.2)",
                    key.len()
                )
            );
        }
    }

    /// Prefix identities match whole path segments: `ops*` is `ops` and what is under
    /// `ops/`, never `opsevil`.
    #[test]
    fn prefixes_match_whole_segments() {
        let ops = Identity::new("spiffe://fleet/ops*");
        assert!(ops.matches("spiffe://fleet/ops"));
        assert!(ops.matches("spiffe://fleet/ops/alice"));
        assert!(!ops.matches("spiffe://fleet/opsevil"));
        assert!(!ops.matches("spiffe://fleet/op"));
        let under = Identity::new("spiffe://fleet/ops/*");
        assert!(under.matches("spiffe://fleet/ops/alice"));
        assert!(!under.matches("spiffe://fleet/ops"));
        assert!(Identity::new("*").matches("anything"));
    }

    fn decide(policy: &Policy, token: &str) -> Decision {
        let header = format!("Bearer {token}");
        policy.decide(ECHO, Some("id"), Some(header.as_bytes()), SystemTime::now())
    }

    /// HS256: a good token passes; expiry, nbf, issuer, audience, signature and `alg`
    /// tampering are each refused as UNAUTHENTICATED.
    #[test]
    fn hs256_tokens() {
        let policy = jwt_policy(JwtAlgorithm::Hs256, KEY32);
        let now = now_secs();
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let claims = |exp: u64, nbf: u64, iss: &str, aud: &str| {
            format!(r#"{{"exp":{exp},"nbf":{nbf},"iss":"{iss}","aud":{aud}}}"#)
        };
        let good = hs256(
            KEY32,
            header,
            &claims(now + 60, now - 60, "iss-1", r#"["x","vitalsd"]"#),
        );
        assert_eq!(decide(&policy, &good), Decision::Allow { audit: false });
        let cases = [
            hs256(
                KEY32,
                header,
                &claims(now - 120, now - 600, "iss-1", r#""vitalsd""#),
            ),
            hs256(
                KEY32,
                header,
                &claims(now + 600, now + 120, "iss-1", r#""vitalsd""#),
            ),
            hs256(
                KEY32,
                header,
                &claims(now + 60, now - 60, "other", r#""vitalsd""#),
            ),
            hs256(
                KEY32,
                header,
                &claims(now + 60, now - 60, "iss-1", r#""someone-else""#),
            ),
            hs256(
                b"wrong-key",
                header,
                &claims(now + 60, now - 60, "iss-1", r#""vitalsd""#),
            ),
            format!(
                "{}.{}.",
                b64url(br#"{"alg":"none"}"#),
                b64url(claims(now + 60, 0, "iss-1", r#""vitalsd""#).as_bytes())
            ),
            "not-a-jwt".to_string(),
        ];
        for token in cases {
            match decide(&policy, &token) {
                Decision::Deny {
                    code: Code::Unauthenticated,
                    reason,
                } => assert!(!reason.contains(&token)),
                other => panic!("{token}: {other:?}"),
            }
        }
        // Within the leeway an expired token still passes.
        let late = hs256(
            KEY32,
            header,
            &claims(now - 10, now - 60, "iss-1", r#""vitalsd""#),
        );
        assert_eq!(decide(&policy, &late), Decision::Allow { audit: false });
    }

    /// ES256 verifies with the public key; an HS256 token made with that public key as the
    /// HMAC secret (the algorithm-confusion attack) is refused.
    #[test]
    fn es256_and_algorithm_confusion() {
        let rng = ring::rand::SystemRandom::new();
        let key = rcgen::KeyPair::generate().unwrap();
        let signer = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        let public_pem = key.public_key_pem();
        let policy = jwt_policy(JwtAlgorithm::Es256, public_pem.as_bytes());
        let now = now_secs();
        let claims = format!(r#"{{"exp":{},"iss":"iss-1","aud":"vitalsd"}}"#, now + 60);
        let signing = format!(
            "{}.{}",
            b64url(br#"{"alg":"ES256"}"#),
            b64url(claims.as_bytes())
        );
        let sig = signer.sign(&rng, signing.as_bytes()).unwrap();
        let good = format!("{signing}.{}", b64url(sig.as_ref()));
        assert_eq!(decide(&policy, &good), Decision::Allow { audit: false });
        let confused = hs256(public_pem.as_bytes(), r#"{"alg":"HS256"}"#, &claims);
        assert!(matches!(
            decide(&policy, &confused),
            Decision::Deny {
                code: Code::Unauthenticated,
                ..
            }
        ));
        // A bad ES256 key is refused when the policy is built.
        let mut secrets = std::collections::BTreeMap::new();
        secrets.insert(
            "k".to_string(),
            crate::secrets::Secret::new(b"not a key".to_vec()),
        );
        let bearer = BearerConfig {
            methods: vec!["*".into()],
            kind: BearerKind::Jwt {
                algorithm: JwtAlgorithm::Es256,
                key: "k".into(),
                issuer: None,
                audience: None,
                leeway: Duration::ZERO,
            },
        };
        assert!(Policy::new(&auth(vec![], vec![bearer]), &Secrets::from_map(secrets)).is_err());
    }

    /// Opaque tokens: missing, malformed and wrong are UNAUTHENTICATED; any configured one passes.
    #[test]
    fn opaque_tokens() {
        let mut secrets = std::collections::BTreeMap::new();
        secrets.insert(
            "t1".to_string(),
            crate::secrets::Secret::new(b"token-one".to_vec()),
        );
        secrets.insert(
            "t2".to_string(),
            crate::secrets::Secret::new(b"token-two".to_vec()),
        );
        let bearer = BearerConfig {
            methods: vec!["vitals.echo.v1.Echo/*".into()],
            kind: BearerKind::Opaque {
                tokens: vec!["t1".into(), "t2".into()],
            },
        };
        let policy = Policy::new(
            &auth(vec![rule(&["*"], &["*"])], vec![bearer]),
            &Secrets::from_map(secrets),
        )
        .unwrap();
        let now = SystemTime::now();
        let allow = Decision::Allow { audit: false };
        assert_eq!(
            policy.decide(ECHO, Some("id"), Some(b"Bearer token-two"), now),
            allow
        );
        assert_eq!(
            policy.decide(ECHO, Some("id"), Some(b"Bearer token-one"), now),
            allow
        );
        for header in [
            None,
            Some(&b"Bearer token-three"[..]),
            Some(b"Basic dG9rZW4="),
            Some(b"Bearer "),
        ] {
            assert_eq!(
                denied(policy.decide(ECHO, Some("id"), header, now)),
                Code::Unauthenticated
            );
        }
        // Methods without a bearer rule need none.
        assert_eq!(policy.decide(HEALTH, Some("id"), None, now), allow);
    }
}
