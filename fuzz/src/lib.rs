//! What the fuzz targets and the seeding program share: the auth policy under test and the
//! secrets it is built from, so that `seed` can write tokens the policy accepts.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use base64::Engine;
use vitals::{
    auth::Policy,
    config::{Auth, BearerConfig, BearerKind, JwtAlgorithm, RuleConfig},
    secrets::{Secret, Secrets},
};

/// The origin `config_parse` gives `Config::parse`, as the daemon would for a drop-in.
pub const CONFIG_ORIGIN: &str = "/etc/vitalsd/vitalsd.d/fuzz.toml";

/// Method guarded by the opaque bearer rule.
pub const OPAQUE_PATH: &str = "/vitals.echo.v1.Echo/Echo";
/// Method guarded by the HS256 JWT bearer rule.
pub const JWT_PATH: &str = "/vitals.metrics.v1.Metrics/Snapshot";
/// A public method without a bearer rule.
pub const PUBLIC_PATH: &str = "/grpc.health.v1.Health/Check";
/// The verified client identity every fuzzed call comes from (rules grant it everything).
pub const IDENTITY: &str = "spiffe://fuzz.vitals/client";

/// The one accepted opaque token.
pub const OPAQUE_TOKEN: &[u8] = b"opaque-token-for-fuzzing-0123456789";
/// The HS256 key: at least 32 bytes, since the policy refuses shorter ones (issue 14).
pub const JWT_KEY: &[u8] = b"hs256-key-for-fuzzing-at-32-bytes";
pub const JWT_ISSUER: &str = "https://issuer.fuzz";
pub const JWT_AUDIENCE: &str = "vitalsd";
pub const JWT_LEEWAY: Duration = Duration::from_secs(30);

/// The clock every decision is made at, so that a run is reproducible (2027-01-15).
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// Opaque bearer on the Echo service, HS256 JWT bearer on the Metrics service, health
/// public, and a rule granting every identity everything: so a decision on a bearer-guarded
/// method is decided by the token alone.
pub fn policy() -> Policy {
    let mut secrets = BTreeMap::new();
    secrets.insert("opaque".to_string(), Secret::new(OPAQUE_TOKEN.to_vec()));
    secrets.insert("jwt".to_string(), Secret::new(JWT_KEY.to_vec()));
    let auth = Auth {
        public: vec!["grpc.health.v1.Health/*".into()],
        audit: vec![],
        rules: vec![RuleConfig {
            identities: vec!["*".into()],
            methods: vec!["*".into()],
        }],
        bearer: vec![
            BearerConfig {
                methods: vec!["vitals.echo.v1.Echo/*".into()],
                kind: BearerKind::Opaque {
                    tokens: vec!["opaque".into()],
                },
            },
            BearerConfig {
                methods: vec!["vitals.metrics.v1.Metrics/*".into()],
                kind: BearerKind::Jwt {
                    algorithm: JwtAlgorithm::Hs256,
                    key: "jwt".into(),
                    issuer: Some(JWT_ISSUER.into()),
                    audience: Some(JWT_AUDIENCE.into()),
                    leeway: JWT_LEEWAY,
                },
            },
        ],
    };
    Policy::new(&auth, &Secrets::from_map(secrets)).expect("the fuzz policy builds")
}

pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The base64url HS256 tag of `signing_input` under [`JWT_KEY`].
pub fn hs256_tag(signing_input: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWT_KEY);
    b64url(ring::hmac::sign(&key, signing_input).as_ref())
}

/// A JWT of this header and these claims (JSON texts), signed with [`JWT_KEY`].
pub fn hs256_jwt(header: &str, claims: &str) -> String {
    let signing = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(claims.as_bytes())
    );
    let tag = hs256_tag(signing.as_bytes());
    format!("{signing}.{tag}")
}
