//! A small DER reader for the few certificate fields the daemon reads: the SANs and subject
//! CN (the peer's identity), notAfter (health's certificate expiry check), and the P-256
//! point of a SubjectPublicKeyInfo (JWT ES256 keys).
//!
//! rustls has verified every certificate this sees in the daemon; this only finds fields,
//! so a full X.509 parser would be code the size budget cannot spare (docs/arm.md). The
//! tests check that x509-parser, a dev-only reference, reads the same. Every read is
//! bounds-checked and returns `None` on anything malformed: it never panics (fuzzed by
//! `fuzz/fuzz_targets/identity.rs`).

use std::time::{Duration, SystemTime};

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
const BOOLEAN: u8 = 0x01;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT` version, `[3] EXPLICIT` extensions of a TBSCertificate.
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
/// GeneralName `[2] IMPLICIT IA5String` and `[6] IMPLICIT IA5String`.
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;

/// 2.5.29.17, subjectAltName.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// 2.5.4.3, commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// 1.2.840.10045.2.1, id-ecPublicKey.
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7, prime256v1.
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A cursor over DER bytes.
#[derive(Clone, Copy)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element's tag and contents (single-byte tags, definite lengths of up to
    /// four bytes, as DER has them).
    fn any(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (bytes, after) = rest.split_at(n);
            rest = after;
            bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b))
        };
        if rest.len() < len {
            return None;
        }
        let (value, after) = rest.split_at(len);
        self.0 = after;
        Some((tag, value))
    }

    /// The contents of the next element, which must have this tag.
    fn expect(&mut self, tag: u8) -> Option<Reader<'a>> {
        match self.any()? {
            (t, value) if t == tag => Some(Reader(value)),
            _ => None,
        }
    }

    /// Skips the next element when it has this tag.
    fn skip_if(&mut self, tag: u8) -> Option<()> {
        if self.peek_tag() == Some(tag) {
            self.any()?;
        }
        Some(())
    }
}

/// The fields of a certificate this crate uses.
struct Certificate<'a> {
    /// The serialNumber's contents (big-endian, as encoded).
    serial: &'a [u8],
    /// The tag (UTCTime or GeneralizedTime) and text of notBefore and notAfter.
    not_before: (u8, &'a [u8]),
    not_after: (u8, &'a [u8]),
    subject: Reader<'a>,
    extensions: Option<Reader<'a>>,
}

fn certificate(der: &[u8]) -> Option<Certificate<'_>> {
    let mut cert = Reader(der).expect(SEQUENCE)?;
    let mut tbs = cert.expect(SEQUENCE)?;
    tbs.skip_if(VERSION)?;
    let (_, serial) = tbs.any()?;
    tbs.expect(SEQUENCE)?; // signature algorithm
    tbs.expect(SEQUENCE)?; // issuer
    let mut validity = tbs.expect(SEQUENCE)?;
    let not_before = validity.any()?;
    let not_after = validity.any()?;
    let subject = tbs.expect(SEQUENCE)?;
    tbs.expect(SEQUENCE)?; // subjectPublicKeyInfo
    let mut extensions = None;
    while let Some((tag, value)) = tbs.any() {
        if tag == EXTENSIONS {
            extensions = Some(Reader(value).expect(SEQUENCE)?);
        }
    }
    Some(Certificate {
        serial,
        not_before,
        not_after,
        subject,
        extensions,
    })
}

/// The identity a certificate names: its first URI SAN, else its first DNS SAN; the subject
/// CN only when it carries no SAN at all (a certificate with only an IP or email SAN names
/// no identity, rather than one a CA may not have checked). `None` when it names nothing
/// usable or does not parse.
pub fn identity(der: &[u8]) -> Option<String> {
    let cert = certificate(der)?;
    let names = match cert.extensions.map(subject_alt_names) {
        // A subjectAltName that does not parse names nothing (rustls refuses it anyway).
        Some(Err(())) => return None,
        Some(Ok(Some(names))) if !names.is_empty() => names,
        _ => {
            return common_name(cert.subject)
                .filter(|cn| !cn.is_empty())
                .map(str::to_string);
        }
    };
    let first = |wanted: u8| {
        let mut names = names;
        std::iter::from_fn(move || names.any())
            .find(|&(tag, _)| tag == wanted)
            .map(|(_, value)| value)
    };
    let name = first(URI).or_else(|| first(DNS_NAME))?;
    (!name.is_empty())
        .then(|| std::str::from_utf8(name).ok().map(str::to_string))
        .flatten()
}

/// The GeneralNames of the subjectAltName extension: `Ok(None)` when there is none, `Err`
/// when the extensions do not parse.
fn subject_alt_names(mut extensions: Reader<'_>) -> Result<Option<Reader<'_>>, ()> {
    while !extensions.is_empty() {
        let mut extension = extensions.expect(SEQUENCE).ok_or(())?;
        let id = extension.expect(OID).ok_or(())?;
        extension.skip_if(BOOLEAN).ok_or(())?;
        let value = extension.expect(OCTET_STRING).ok_or(())?;
        if id.0 == SUBJECT_ALT_NAME {
            return { value }.expect(SEQUENCE).map(Some).ok_or(());
        }
    }
    Ok(None)
}

/// The first commonName of a Name, when it is a UTF8String, PrintableString or IA5String
/// (as x509-parser read it: a TeletexString or BMPString CN names no identity).
fn common_name(mut name: Reader<'_>) -> Option<&str> {
    while !name.is_empty() {
        let mut rdn = name.expect(SET)?;
        while !rdn.is_empty() {
            let mut attribute = rdn.expect(SEQUENCE)?;
            let id = attribute.expect(OID)?;
            if id.0 == COMMON_NAME {
                return match attribute.any()? {
                    (0x0c | 0x13 | 0x16, value) => std::str::from_utf8(value).ok(),
                    _ => None,
                };
            }
        }
    }
    None
}

/// When a certificate stops being valid.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    time(certificate(der)?.not_after)
}

/// When a certificate starts being valid (with notAfter, its lifetime: renewal is timed by
/// it).
pub fn not_before(der: &[u8]) -> Option<SystemTime> {
    time(certificate(der)?.not_before)
}

/// The serial number as colon-separated hex bytes, as Vault and OpenBao write it
/// (`1f:0a:…`), leading zero bytes of the encoding left out.
pub fn serial(der: &[u8]) -> Option<String> {
    let bytes = certificate(der)?.serial;
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    let hex: Vec<String> = bytes[start..].iter().map(|b| format!("{b:02x}")).collect();
    Some(hex.join(":"))
}

fn time(field: (u8, &[u8])) -> Option<SystemTime> {
    let secs = match field {
        (UTC_TIME, text) if text.len() == 13 => utc_time(text)?,
        (GENERALIZED_TIME, text) if text.len() == 15 => generalized_time(text)?,
        _ => return None,
    };
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// `YYMMDDHHMMSSZ`, years 50-99 in the 1900s (RFC 5280).
fn utc_time(text: &[u8]) -> Option<i64> {
    let yy = digits(text, 0, 2)?;
    let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
    timestamp(year, text.get(2..)?)
}

/// `YYYYMMDDHHMMSSZ`.
fn generalized_time(text: &[u8]) -> Option<i64> {
    timestamp(digits(text, 0, 4)?, text.get(4..)?)
}

/// Seconds since the epoch of `year` and `MMDDHHMMSSZ`.
fn timestamp(year: i64, rest: &[u8]) -> Option<i64> {
    if rest.len() != 11 || rest[10] != b'Z' {
        return None;
    }
    let (month, day) = (digits(rest, 0, 2)?, digits(rest, 2, 2)?);
    let (hour, minute, second) = (
        digits(rest, 4, 2)?,
        digits(rest, 6, 2)?,
        digits(rest, 8, 2)?,
    );
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// The number `text[at..at + n]` spells in ASCII digits.
fn digits(text: &[u8], at: usize, n: usize) -> Option<i64> {
    let field = text.get(at..at + n)?;
    field.iter().try_fold(0i64, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + i64::from(b - b'0'))
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The uncompressed point of a DER P-256 SubjectPublicKeyInfo.
pub fn p256_point(spki: &[u8]) -> Option<Vec<u8>> {
    let mut spki = Reader(spki).expect(SEQUENCE)?;
    let mut algorithm = spki.expect(SEQUENCE)?;
    let (key_type, curve) = (algorithm.expect(OID)?, algorithm.expect(OID)?);
    let bits = spki.expect(BIT_STRING)?.0;
    let point = match bits.split_first()? {
        (0, point) => point,
        _ => return None,
    };
    let p256 = key_type.0 == EC_PUBLIC_KEY && curve.0 == P256;
    (p256 && point.len() == 65 && point[0] == 4).then(|| point.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Authority, Leaf, Usage};
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    /// What x509-parser, the reference, reads: `None` when it does not parse the
    /// certificate at all.
    fn reference(der: &[u8]) -> Option<(Option<String>, Option<i64>)> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut identity = None;
        let mut has_san = false;
        let san = cert.subject_alternative_name();
        // One that does not parse names nothing, as ours.
        has_san |= san.is_err();
        if let Ok(Some(san)) = san {
            let names = &san.value.general_names;
            has_san = !names.is_empty();
            let uri = names.iter().find_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            });
            let dns = || {
                names.iter().find_map(|n| match n {
                    GeneralName::DNSName(d) => Some(*d),
                    _ => None,
                })
            };
            identity = uri
                .or_else(dns)
                .filter(|n| !n.is_empty())
                .map(str::to_string);
        }
        // The CN only when there is no SAN at all.
        if !has_san {
            identity = cert
                .subject()
                .iter_common_name()
                .next()
                // The string types this reader takes (x509-parser reads any tag's bytes
                // as text, which no certificate issuer writes).
                .filter(|cn| matches!(cn.attr_value().tag().0, 0x0c | 0x13 | 0x16))
                .and_then(|cn| cn.as_str().ok())
                .filter(|s| !s.is_empty())
                .map(str::to_string);
        }
        // Before 1970 is no expiry (tls::not_after made it a SystemTime the same way).
        let not_after = Some(cert.validity().not_after.timestamp()).filter(|s| *s >= 0);
        Some((identity, not_after))
    }

    fn ours(der: &[u8]) -> (Option<String>, Option<i64>) {
        let secs = not_after(der)
            .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64);
        (identity(der), secs)
    }

    fn der_of(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// Certificates with every mix of URI, DNS and IP SANs and CNs, and validity up to
    /// beyond 2050 (GeneralizedTime): the same identity and expiry as x509-parser.
    #[test]
    fn agrees_with_x509_parser_on_issued_certificates() {
        let ca = Authority::new("der test").unwrap();
        let mut certs = vec![der_of(&ca.cert_pem())];
        let san_sets: [&[&str]; 6] = [
            &[],
            &["spiffe://fleet/prober"],
            &["dev.example", "spiffe://fleet/a"],
            &["dev.example", "other.example"],
            &["10.0.0.1"],
            &["10.0.0.1", "::1", "b.example"],
        ];
        for sans in san_sets {
            for cn in ["the-cn", "ünïcode cn", ""] {
                for days in [1, 400, 30_000] {
                    let leaf = Leaf::new(cn, sans, Usage::Client, days);
                    certs.push(der_of(&ca.issue(&leaf).unwrap().cert));
                }
            }
        }
        for der in &certs {
            let expected = reference(der).expect("x509-parser reads what rcgen wrote");
            assert_eq!(ours(der), expected);
        }
    }

    /// notBefore and the serial number read as x509-parser reads them.
    #[test]
    fn not_before_and_serial_agree_with_x509_parser() {
        let ca = Authority::new("der test").unwrap();
        for days in [1, 30_000] {
            let der = der_of(
                &ca.issue(&Leaf::new("x", &[], Usage::Server, days))
                    .unwrap()
                    .cert,
            );
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            let secs = not_before(&der)
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert_eq!(secs, cert.validity().not_before.timestamp());
            let expected: Vec<String> = cert
                .raw_serial()
                .iter()
                .skip_while(|b| **b == 0)
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(serial(&der).unwrap(), expected.join(":"));
        }
    }

    /// On every input of the identity fuzz corpus that x509-parser reads, the same answers;
    /// on the rest, no panic.
    #[test]
    fn agrees_with_x509_parser_on_the_fuzz_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/identity");
        let mut compared = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let der = std::fs::read(entry.unwrap().path()).unwrap();
            let answer = ours(&der);
            if let Some(expected) = reference(&der) {
                assert_eq!(answer, expected, "{der:02x?}");
                compared += 1;
            }
        }
        // 34 of the 312 entries were certificates x509-parser read when this was written.
        assert!(
            compared >= 20,
            "only {compared} corpus entries parsed as certificates"
        );
    }

    /// Every strict prefix of a certificate is refused, without a panic.
    #[test]
    fn truncations_are_refused() {
        let ca = Authority::new("t").unwrap();
        let leaf = Leaf::new("cn", &["spiffe://x/y"], Usage::Client, 10);
        let der = der_of(&ca.issue(&leaf).unwrap().cert);
        for len in 0..der.len() {
            assert_eq!(ours(&der[..len]), (None, None), "prefix of {len} bytes");
        }
    }

    /// UTCTime years 50-99 are the 1900s; dates count from the epoch across leap years.
    #[test]
    fn times() {
        assert_eq!(utc_time(b"700101000000Z"), Some(0));
        assert_eq!(utc_time(b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(utc_time(b"500101000000Z"), Some(-631_152_000));
        assert_eq!(generalized_time(b"20000301000000Z"), Some(951_868_800));
        assert_eq!(generalized_time(b"99991231235959Z"), Some(253_402_300_799));
        for bad in [
            &b"700101000000"[..],
            b"701301000000Z",
            b"7001010000a0Z",
            b"70010100000Z",
        ] {
            assert_eq!(utc_time(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// The P-256 point of an SPKI, as x509-parser found it; other curves are refused.
    #[test]
    fn p256_points() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let point = p256_point(&spki).unwrap();
        assert_eq!(point, key.public_key_raw());
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert_eq!(
            p256_point(&rcgen::PublicKeyData::subject_public_key_info(&p384)),
            None
        );
        for len in 0..spki.len() {
            assert_eq!(p256_point(&spki[..len]), None);
        }
    }
}
