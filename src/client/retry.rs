//! The gRPC retry policy, as proposal A6 defines it: which status codes are retried, how
//! many attempts a call gets (at most 5), the randomised exponential backoff between them,
//! and server pushback (`grpc-retry-pushback-ms`).
//!
//! Everything here is pure: the caller makes the attempts, keeps the deadline, and passes
//! in the random number, so the rules are tested without a server or a clock.

use std::time::Duration;

use serde_json::Value;
use tonic::Code;

use crate::rpc_stats::code_name;

/// A6: service owners may ask for more, the client caps it.
pub const MAX_ATTEMPTS_CAP: u32 = 5;
/// The trailer a server uses to push back.
pub const PUSHBACK: &str = "grpc-retry-pushback-ms";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("retry policy is not JSON: {0}")]
    Json(String),
    #[error("retry policy: no retryPolicy for {service}/{method} in the service config")]
    NoPolicy { service: String, method: String },
    #[error("retry policy: `{field}` {reason}")]
    Field { field: &'static str, reason: String },
    #[error("`{0}` is not a gRPC status code (a name such as UNAVAILABLE, or 0 to 16)")]
    Code(String),
}

fn field(field: &'static str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        field,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included; 1 means no retries.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub backoff_multiplier: f64,
    pub retryable: Vec<Code>,
}

impl Default for RetryPolicy {
    /// The example policy of A6: four attempts, 0.1 s doubling to 1 s, on UNAVAILABLE.
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            retryable: vec![Code::Unavailable],
        }
    }
}

impl std::fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codes: Vec<&str> = self.retryable.iter().map(|c| code_name(*c)).collect();
        write!(
            f,
            "up to {} attempts on {}, backoff random up to {:?} growing x{} to {:?}",
            self.max_attempts,
            codes.join(","),
            self.initial_backoff,
            self.backoff_multiplier,
            self.max_backoff
        )
    }
}

/// A status code by name (`UNAVAILABLE`, any case) or number (`14`).
pub fn parse_code(text: &str) -> Result<Code, PolicyError> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i32>() {
        return match n {
            0..=16 => Ok(Code::from(n)),
            _ => Err(PolicyError::Code(text.to_string())),
        };
    }
    (0..=16)
        .map(Code::from)
        .find(|c| code_name(*c).eq_ignore_ascii_case(text))
        .ok_or_else(|| PolicyError::Code(text.to_string()))
}

/// A proto3 JSON duration: decimal seconds with an `s`, such as `".1s"` or `"1.5s"`.
fn parse_json_duration(name: &'static str, value: &Value) -> Result<Duration, PolicyError> {
    let text = value
        .as_str()
        .ok_or_else(|| field(name, "must be a string such as \"0.1s\""))?;
    let secs = text
        .strip_suffix('s')
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| field(name, format!("`{text}` is not a duration such as \"0.1s\"")))?;
    let d = Duration::try_from_secs_f64(secs).map_err(|_| field(name, "is out of range"))?;
    if d.is_zero() {
        return Err(field(name, "must be greater than zero"));
    }
    Ok(d)
}

impl RetryPolicy {
    /// Reads a retry policy from JSON: a `retryPolicy` object itself, an object holding one
    /// (`{"retryPolicy": {...}}`), or a whole service config, whose `methodConfig` entry for
    /// `service`/`method` is used (an exact method name first, then the service, then the
    /// default entry with an empty name). Validated as A6 says; `maxAttempts` above 5 is
    /// taken as 5.
    pub fn from_json(text: &str, service: &str, method: &str) -> Result<RetryPolicy, PolicyError> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        let policy = if let Some(configs) = json.get("methodConfig") {
            select(configs, service, method).ok_or_else(|| PolicyError::NoPolicy {
                service: service.to_string(),
                method: method.to_string(),
            })?
        } else {
            json.get("retryPolicy").unwrap_or(&json)
        };
        RetryPolicy::from_value(policy)
    }

    fn from_value(v: &Value) -> Result<RetryPolicy, PolicyError> {
        let attempts = v
            .get("maxAttempts")
            .ok_or_else(|| field("maxAttempts", "is required"))?
            .as_f64()
            .filter(|n| n.fract() == 0.0)
            .ok_or_else(|| field("maxAttempts", "must be a whole number"))?;
        if attempts < 2.0 {
            return Err(field("maxAttempts", "must be 2 or more"));
        }
        let required = |name: &'static str| v.get(name).ok_or_else(|| field(name, "is required"));
        let initial_backoff = parse_json_duration("initialBackoff", required("initialBackoff")?)?;
        let max_backoff = parse_json_duration("maxBackoff", required("maxBackoff")?)?;
        let backoff_multiplier = required("backoffMultiplier")?
            .as_f64()
            .filter(|m| *m > 0.0)
            .ok_or_else(|| field("backoffMultiplier", "must be a number greater than zero"))?;
        let codes = required("retryableStatusCodes")?
            .as_array()
            .filter(|codes| !codes.is_empty())
            .ok_or_else(|| field("retryableStatusCodes", "must be a non-empty list"))?;
        let retryable = codes
            .iter()
            .map(|c| match c {
                Value::String(s) => parse_code(s),
                Value::Number(n) => parse_code(&n.to_string()),
                other => Err(PolicyError::Code(other.to_string())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RetryPolicy {
            max_attempts: (attempts.min(f64::from(MAX_ATTEMPTS_CAP))) as u32,
            initial_backoff,
            max_backoff,
            backoff_multiplier,
            retryable,
        })
    }

    /// What to do after attempt number `attempts` (1 for the first) failed with `code`,
    /// given the server's pushback value if it sent one and `random` in [0, 1).
    pub fn decide(
        &self,
        attempts: u32,
        code: Code,
        pushback: Option<&str>,
        backoff: &mut Backoff,
        random: f64,
    ) -> Decision {
        if !self.retryable.contains(&code) {
            return Decision::Stop(Stop::NotRetryable(code));
        }
        let pushback = match pushback.map(str::parse::<i32>) {
            Some(Ok(ms)) if ms >= 0 => Some(Duration::from_millis(ms as u64)),
            Some(_) => {
                return Decision::Stop(Stop::PushedBack(pushback.unwrap_or_default().to_string()));
            }
            None => None,
        };
        if attempts >= self.max_attempts {
            return Decision::Stop(Stop::Exhausted(attempts));
        }
        match pushback {
            Some(after) => {
                // A6: after a pushback the following backoff starts over.
                backoff.reset(self);
                Decision::Retry {
                    after,
                    pushback: true,
                }
            }
            None => Decision::Retry {
                after: backoff.next(self, random),
                pushback: false,
            },
        }
    }
}

/// The service config's `methodConfig` entry for a method.
fn select<'a>(configs: &'a Value, service: &str, method: &str) -> Option<&'a Value> {
    let configs = configs.as_array()?;
    let score = |config: &Value| -> Option<u8> {
        let names = config.get("name")?.as_array()?;
        names
            .iter()
            .filter_map(|name| {
                let s = name.get("service").and_then(Value::as_str).unwrap_or("");
                let m = name.get("method").and_then(Value::as_str).unwrap_or("");
                match (s, m) {
                    (s, m) if s == service && m == method => Some(3),
                    (s, "") if s == service => Some(2),
                    ("", "") => Some(1),
                    _ => None,
                }
            })
            .max()
    };
    configs
        .iter()
        .filter_map(|c| Some((score(c)?, c)))
        .max_by_key(|(score, _)| *score)
        .and_then(|(_, c)| c.get("retryPolicy"))
}

/// The growing bound of the randomised backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    bound: Duration,
}

impl Backoff {
    pub fn new(policy: &RetryPolicy) -> Backoff {
        Backoff {
            bound: policy.initial_backoff.min(policy.max_backoff),
        }
    }

    /// random(0, bound), then the bound grows by the multiplier up to the maximum: the n-th
    /// retry waits random(0, min(initialBackoff * multiplier^(n-1), maxBackoff)).
    fn next(&mut self, policy: &RetryPolicy, random: f64) -> Duration {
        let wait = self.bound.mul_f64(random.clamp(0.0, 1.0));
        let grown = self.bound.as_secs_f64() * policy.backoff_multiplier;
        self.bound = Duration::try_from_secs_f64(grown)
            .unwrap_or(policy.max_backoff)
            .min(policy.max_backoff);
        wait
    }

    fn reset(&mut self, policy: &RetryPolicy) {
        *self = Backoff::new(policy);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Try again after this long; `pushback` when the server chose the delay.
    Retry {
        after: Duration,
        pushback: bool,
    },
    Stop(Stop),
}

/// Why a failed call is not tried again.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    NotRetryable(Code),
    /// `maxAttempts` attempts were made.
    Exhausted(u32),
    /// The server's pushback (this value) asks for no retry.
    PushedBack(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::NotRetryable(code) => write!(f, "{} is not retryable", code_name(*code)),
            Stop::Exhausted(n) => write!(f, "all {n} attempts used"),
            Stop::PushedBack(v) => write!(f, "the server's pushback `{v}` asks for no retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A6_EXAMPLE: &str = r#"{
        "maxAttempts": 4,
        "initialBackoff": ".1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]
    }"#;

    fn policy(json: &str) -> Result<RetryPolicy, PolicyError> {
        RetryPolicy::from_json(json, "vitals.echo.v1.Echo", "Echo")
    }

    /// A6's example policy reads as written, alone or wrapped in `retryPolicy`.
    #[test]
    fn reads_a6_example() {
        let p = policy(A6_EXAMPLE).unwrap();
        assert_eq!(p, RetryPolicy::default());
        let wrapped = format!(r#"{{"retryPolicy": {A6_EXAMPLE}}}"#);
        assert_eq!(policy(&wrapped).unwrap(), p);
    }

    /// In a service config the most specific methodConfig wins: method, service, default.
    #[test]
    fn service_config_picks_most_specific_entry() {
        let config = |a: u32, b: u32, c: u32| {
            format!(
                r#"{{"methodConfig": [
                {{"name": [{{}}], "retryPolicy": {{"maxAttempts": {a}, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 1, "retryableStatusCodes": [14]}}}},
                {{"name": [{{"service": "vitals.echo.v1.Echo", "method": "Echo"}}], "retryPolicy": {{"maxAttempts": {b}, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 1, "retryableStatusCodes": ["unavailable"]}}}},
                {{"name": [{{"service": "vitals.echo.v1.Echo"}}], "retryPolicy": {{"maxAttempts": {c}, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 1, "retryableStatusCodes": ["ABORTED"]}}}}
            ]}}"#
            )
        };
        let p = policy(&config(2, 3, 4)).unwrap();
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.retryable, [Code::Unavailable]);
        let other = RetryPolicy::from_json(&config(2, 3, 4), "vitals.echo.v1.Echo", "EchoStream");
        assert_eq!(other.unwrap().retryable, [Code::Aborted]);
        let default = RetryPolicy::from_json(&config(2, 3, 4), "grpc.health.v1.Health", "Check");
        assert_eq!(default.unwrap().retryable, [Code::Unavailable]);
        let none = RetryPolicy::from_json(r#"{"methodConfig": []}"#, "a.B", "C");
        assert!(matches!(none, Err(PolicyError::NoPolicy { .. })));
    }

    /// maxAttempts above 5 is taken as 5; below 2, or a missing or bad field, is an error
    /// naming the field.
    #[test]
    fn validates_fields() {
        let with = |key: &str, value: &str| {
            let mut v: Value = serde_json::from_str(A6_EXAMPLE).unwrap();
            v[key] = serde_json::from_str(value).unwrap();
            policy(&v.to_string())
        };
        assert_eq!(with("maxAttempts", "10").unwrap().max_attempts, 5);
        let bad = [
            ("maxAttempts", "1"),
            ("maxAttempts", "2.5"),
            ("initialBackoff", "\"0s\""),
            ("initialBackoff", "\"100ms\""),
            ("maxBackoff", "1"),
            ("backoffMultiplier", "0"),
            ("retryableStatusCodes", "[]"),
        ];
        for (key, value) in bad {
            let err = with(key, value).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
        assert_eq!(
            with("retryableStatusCodes", "[\"NOPE\"]").unwrap_err(),
            PolicyError::Code("NOPE".into())
        );
        let mut missing: Value = serde_json::from_str(A6_EXAMPLE).unwrap();
        missing.as_object_mut().unwrap().remove("maxBackoff");
        let err = policy(&missing.to_string()).unwrap_err();
        assert_eq!(err.to_string(), "retry policy: `maxBackoff` is required");
        assert!(matches!(policy("{nope"), Err(PolicyError::Json(_))));
    }

    /// Backoff is random(0, bound) with the bound growing by the multiplier to the maximum.
    #[test]
    fn backoff_grows_to_maximum() {
        let p = RetryPolicy {
            max_attempts: 5,
            ..RetryPolicy::default()
        };
        let mut backoff = Backoff::new(&p);
        let mut waits = Vec::new();
        for attempt in 1..5 {
            match p.decide(attempt, Code::Unavailable, None, &mut backoff, 0.999_999) {
                Decision::Retry { after, pushback } => {
                    assert!(!pushback);
                    waits.push(after.as_millis());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, [99, 199, 399, 799]);
        let mut low = Backoff::new(&p);
        assert_eq!(
            p.decide(1, Code::Unavailable, None, &mut low, 0.0),
            Decision::Retry {
                after: Duration::ZERO,
                pushback: false
            }
        );
        let mut capped = Backoff::new(&p);
        for _ in 0..10 {
            capped.next(&p, 0.5);
        }
        assert_eq!(capped.next(&p, 0.5), Duration::from_millis(500));
    }

    /// Only retryable codes are retried, and never past maxAttempts.
    #[test]
    fn stops_on_fatal_code_and_exhaustion() {
        let p = RetryPolicy::default();
        let mut backoff = Backoff::new(&p);
        assert_eq!(
            p.decide(1, Code::InvalidArgument, None, &mut backoff, 0.5),
            Decision::Stop(Stop::NotRetryable(Code::InvalidArgument))
        );
        assert_eq!(
            p.decide(4, Code::Unavailable, Some("10"), &mut backoff, 0.5),
            Decision::Stop(Stop::Exhausted(4))
        );
    }

    /// A valid pushback sets the delay and restarts the backoff; a negative or unparsable
    /// one stops retrying.
    #[test]
    fn pushback() {
        let p = RetryPolicy::default();
        let mut backoff = Backoff::new(&p);
        backoff.next(&p, 0.5);
        backoff.next(&p, 0.5);
        assert_eq!(
            p.decide(1, Code::Unavailable, Some("250"), &mut backoff, 0.5),
            Decision::Retry {
                after: Duration::from_millis(250),
                pushback: true
            }
        );
        assert_eq!(backoff.bound, p.initial_backoff);
        assert_eq!(
            p.decide(1, Code::Unavailable, Some("0"), &mut backoff, 0.5),
            Decision::Retry {
                after: Duration::ZERO,
                pushback: true
            }
        );
        for bad in ["-1", "soon", "", "1.5", "99999999999"] {
            assert_eq!(
                p.decide(1, Code::Unavailable, Some(bad), &mut backoff, 0.5),
                Decision::Stop(Stop::PushedBack(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    /// Codes read by name in any case, or by number.
    #[test]
    fn code_names() {
        assert_eq!(parse_code("UNAVAILABLE"), Ok(Code::Unavailable));
        assert_eq!(
            parse_code("resource_exhausted"),
            Ok(Code::ResourceExhausted)
        );
        assert_eq!(parse_code("4"), Ok(Code::DeadlineExceeded));
        assert!(parse_code("17").is_err());
        assert!(parse_code("OKAY").is_err());
    }
}
