//! One grammar for durations and sizes, used by the config files, the environment and
//! vitalsctl's flags alike, so `1m30s` or `4k` means the same thing everywhere.
//!
//! - A duration is one or more `<number><unit>` terms, summed: `250ms`, `1.5s`, `1m30s`,
//!   `2h`, `1d`. Units: `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`, `d`. A bare `0` is zero. A
//!   leading `-` or `+` is read by [`parse_signed_duration`] (Go's flags allow it); config
//!   values use [`parse_duration`], which refuses a negative one.
//! - A size is a whole number with an optional unit, in powers of 1024 and in any case:
//!   `65536`, `512B`, `64KiB`, `4k`, `4MiB`, `1G`.

use std::time::Duration;

/// A duration such as `500ms`, `30s`, `1m30s` or `1d`; negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match parse_signed_duration(text)? {
        (false, d) => Ok(d),
        (true, d) if d.is_zero() => Ok(d),
        (true, _) => Err(format!("`{text}` is negative")),
    }
}

/// A duration with an optional sign: `(negative, magnitude)`.
pub fn parse_signed_duration(text: &str) -> Result<(bool, Duration), String> {
    let trimmed = text.trim();
    let (negative, body) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    if body == "0" {
        return Ok((negative, Duration::ZERO));
    }
    let bad = || format!("`{text}` is not a duration such as 500ms, 30s or 1m30s");
    if body.is_empty() {
        return Err(bad());
    }
    let mut rest = body;
    let mut secs = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        let after = rest[number_len..].trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let scale = match &after[..unit_len] {
            "" => {
                return Err(format!("`{text}` needs a unit: ns, us, ms, s, m, h or d"));
            }
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            other => {
                return Err(format!(
                    "`{other}` is not a unit: use ns, us, ms, s, m, h or d"
                ));
            }
        };
        secs += number * scale;
        rest = after[unit_len..].trim_start();
    }
    Duration::try_from_secs_f64(secs)
        .map(|d| (negative, d))
        .map_err(|_| format!("`{text}` is out of range"))
}

/// A byte size such as `65536`, `512B`, `64KiB`, `4k` or `4MiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let v = text.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 65536, 64KiB or 4MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{}` is not a unit: use B, KiB, MiB or GiB",
                unit.trim()
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit, sums of terms, fractions and spaces read the same in config and CLI.
    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h1m1s"), Ok(Duration::from_secs(3661)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration(" 10 s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("-0"), Ok(Duration::ZERO));
        assert!(parse_duration("-2s").unwrap_err().contains("negative"));
        assert_eq!(
            parse_signed_duration("-2s"),
            Ok((true, Duration::from_secs(2)))
        );
        assert!(parse_duration("10").unwrap_err().contains("needs a unit"));
        assert!(
            parse_duration("4 parsecs")
                .unwrap_err()
                .contains("not a unit")
        );
        for bad in ["", "5", "1x", "s", "1s2", "..s", "1..2s", "-", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    /// Sizes in powers of 1024, any case, with or without `B`.
    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65_536));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4 MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("4 apples").unwrap_err().contains("not a unit"));
        assert!(parse_size("4 parsecs").unwrap_err().contains("not a unit"));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
