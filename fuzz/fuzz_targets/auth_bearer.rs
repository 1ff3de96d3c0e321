//! `Policy::decide` on an arbitrary `authorization` header, as a hostile client sends it.
//!
//! Input: one selector byte (low two bits: which method; bit 7: no header at all), then
//! the header value. The policy (see `vitals_fuzz::policy`) guards Echo with an opaque
//! token and Metrics with an HS256 JWT, and grants every identity everything else, so:
//!
//! - the public health method is always allowed;
//! - the opaque-guarded method is allowed exactly for `Bearer <the token>`;
//! - the JWT-guarded method is allowed only for a token whose signature part is exactly
//!   the HS256 tag of its first two parts (no signature malleability, no bypass);
//! - every other outcome is UNAUTHENTICATED whose reason never repeats the token.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tonic::Code;
use vitals::auth::{Decision, Policy};
use vitals_fuzz::{
    IDENTITY, JWT_PATH, OPAQUE_PATH, OPAQUE_TOKEN, PUBLIC_PATH, hs256_tag, now, policy,
};

static POLICY: LazyLock<Policy> = LazyLock::new(policy);

/// The token of a `Bearer`/`bearer` header, as the policy reads it.
fn token(header: &[u8]) -> Option<&[u8]> {
    header
        .strip_prefix(b"Bearer ")
        .or_else(|| header.strip_prefix(b"bearer "))
}

/// Whether `token` is `header.claims.sig` with `sig` the exact HS256 tag of `header.claims`.
fn correctly_signed(token: &[u8]) -> bool {
    let Some(dot) = token.iter().rposition(|&b| b == b'.') else {
        return false;
    };
    let (signing, sig) = (&token[..dot], &token[dot + 1..]);
    signing.iter().filter(|&&b| b == b'.').count() == 1 && sig == hs256_tag(signing).as_bytes()
}

/// Whether a token could only be in a reason if the reason were made from it: long, and
/// with a byte the fixed reasons never use. (Without this the fuzzer soon presents a
/// token that is a piece of a fixed reason, such as `arer token is not a JW`.)
fn distinctive(token: &[u8]) -> bool {
    token.len() >= 16
        && token
            .iter()
            .any(|b| !(b.is_ascii_alphanumeric() || b" `:<>().,".contains(b)))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, header)) = data.split_first() else {
        return;
    };
    let path = match selector & 0b11 {
        0 | 3 => OPAQUE_PATH,
        1 => JWT_PATH,
        _ => PUBLIC_PATH,
    };
    let authorization = (selector & 0x80 == 0).then_some(header);
    let decision = POLICY.decide(path, Some(IDENTITY), authorization, now());
    let presented = authorization.and_then(token);
    match &decision {
        Decision::Allow { audit } => {
            assert!(!audit, "no method is audited in this policy");
            match path {
                PUBLIC_PATH => {}
                OPAQUE_PATH => assert_eq!(
                    presented,
                    Some(OPAQUE_TOKEN),
                    "allowed a token that is not the configured one"
                ),
                _ => assert!(
                    presented.is_some_and(correctly_signed),
                    "allowed a JWT whose signature is not the HS256 tag of its content"
                ),
            }
        }
        Decision::Deny { code, reason } => {
            assert_ne!(path, PUBLIC_PATH, "denied a public method: {reason}");
            assert_eq!(*code, Code::Unauthenticated, "{reason}");
            assert!(
                path != OPAQUE_PATH || presented != Some(OPAQUE_TOKEN),
                "refused the configured opaque token: {reason}"
            );
            if let Some(token) = presented.filter(|t| distinctive(t)) {
                assert!(
                    !reason.as_bytes().windows(token.len()).any(|w| w == token),
                    "the denial reason repeats the token: {reason}"
                );
            }
        }
    }
});
