//! The few certificate fields the daemon reads, through x509-parser: the peer's identity
//! (SANs and subject CN), notBefore and notAfter (certificate expiry and renewal), the serial
//! number (the pki engine's log lines), the P-256 point of a SubjectPublicKeyInfo (JWT
//! ES256 keys), and for a certificate the pki issued: every name it carries, its public key
//! and key type, and whether it is self-issued (a root, left out of the served chain).
//!
//! x509-parser because it is the maintained X.509 reader of the Rust ecosystem (rusticata,
//! fuzzed upstream), reads borrowed DER without copying, and comes without default features:
//! no signature verification, which rustls does. Certificates are read with the extensions
//! split out but not each parsed, and the one this needs, the subjectAltName, is parsed on
//! its own: that leaves x509-parser's readers of the other extensions unlinked (about 60 KB
//! of x86_64 code, docs/arm.md). What is ours is the rule that picks the identity.
//!
//! Every function returns `None` on anything malformed and never panics (fuzzed by
//! `fuzz/fuzz_targets/identity.rs`): in the daemon rustls has verified a peer's certificate
//! first, but the pki engine's answer, the files on disk and `vitalsctl`'s inputs have not
//! been.

use std::fmt::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use x509_parser::der_parser::asn1_rs::{Class, Tag};
use x509_parser::nom::Parser;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
    OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::{
    FromDer, GeneralName, SubjectAlternativeName, SubjectPublicKeyInfo, X509Certificate,
    X509CertificateParser,
};

/// The certificate, its extensions split out but not read: the one this reads, the
/// subjectAltName, is read on its own ([`identity`]), so x509-parser's readers of the other
/// extensions are not linked.
fn certificate(der: &[u8]) -> Option<X509Certificate<'_>> {
    X509CertificateParser::new()
        .with_deep_parse_extensions(false)
        .parse(der)
        .ok()
        .map(|(_, cert)| cert)
}

/// The identity a certificate names: its first URI SAN, else its first DNS SAN; the subject
/// CN only when it carries no SAN at all (a certificate with only an IP or email SAN names
/// no identity, rather than one a CA may not have checked). `None` when it names nothing
/// usable or does not parse.
pub fn identity(der: &[u8]) -> Option<String> {
    let cert = certificate(der)?;
    // The first subjectAltName counts, as it did for the DER reader before this (a
    // certificate with two never gets here in the daemon: rustls refuses it).
    let san = cert
        .extensions()
        .iter()
        .find(|extension| extension.oid == OID_X509_EXT_SUBJECT_ALT_NAME);
    match san.map(|extension| SubjectAlternativeName::from_der(extension.value)) {
        None => common_name(&cert),
        Some(Ok((_, san))) => match &san.general_names[..] {
            [] => common_name(&cert),
            names => san_identity(names),
        },
        // One that does not parse names nothing (rustls refuses it anyway).
        Some(Err(_)) => None,
    }
}

/// Whether a certificate may be used as a TLS client's (the clientAuth extended key usage,
/// or anyExtendedKeyUsage, or no extended key usage extension at all, which restricts
/// nothing); `None` when it does not parse. The extension's value is a sequence of OIDs,
/// looked up as DER bytes rather than parsed, so no extension reader is linked for it.
pub fn allows_client_auth(der: &[u8]) -> Option<bool> {
    /// 2.5.29.37, extKeyUsage, as x509-parser spells its OIDs.
    const EXT_KEY_USAGE: [u64; 4] = [2, 5, 29, 37];
    /// 1.3.6.1.5.5.7.3.2 (id-kp-clientAuth) and 2.5.29.37.0 (anyExtendedKeyUsage), as DER.
    const CLIENT_AUTH: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
    const ANY: &[u8] = &[0x06, 0x04, 0x55, 0x1d, 0x25, 0x00];
    let cert = certificate(der)?;
    let eku = cert.extensions().iter().find(|extension| {
        extension
            .oid
            .iter()
            .is_some_and(|arcs| arcs.eq(EXT_KEY_USAGE.iter().copied()))
    });
    Some(eku.is_none_or(|extension| {
        let value = extension.value;
        [CLIENT_AUTH, ANY]
            .iter()
            .any(|oid| value.windows(oid.len()).any(|w| w == *oid))
    }))
}

/// The first URI, else the first DNS name; `None` when that one is empty or not UTF-8
/// (x509-parser keeps a name that is not UTF-8 as `Invalid` with its tag, and it still counts
/// as the first of its kind: a later one does not stand in for it).
fn san_identity(names: &[GeneralName<'_>]) -> Option<String> {
    const DNS_NAME: u32 = 2;
    const URI: u32 = 6;
    let first = |wanted: u32| {
        names.iter().find_map(|name| match *name {
            GeneralName::URI(uri) if wanted == URI => Some(Some(uri)),
            GeneralName::DNSName(dns) if wanted == DNS_NAME => Some(Some(dns)),
            GeneralName::Invalid(tag, _) if tag.0 == wanted => Some(None),
            _ => None,
        })
    };
    let name = first(URI).or_else(|| first(DNS_NAME))??;
    (!name.is_empty()).then(|| name.to_string())
}

/// The subject's first commonName, when it is a non-empty UTF8String, PrintableString or
/// IA5String (a TeletexString, BMPString or NumericString CN names no identity).
fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    let cn = cert.subject().iter_common_name().next()?;
    let value = cn.attr_value();
    let text = value.class() == Class::Universal
        && value.header.is_primitive()
        && matches!(
            value.tag(),
            Tag::Utf8String | Tag::PrintableString | Tag::Ia5String
        );
    if !text {
        return None;
    }
    let cn = std::str::from_utf8(value.data).ok()?;
    (!cn.is_empty()).then(|| cn.to_string())
}

/// notBefore and notAfter in seconds since the epoch (negative before 1970).
fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let cert = certificate(der)?;
    let validity = cert.validity();
    Some((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// A time before 1970 is no time (no certificate the daemon reads was issued before then).
fn system_time(secs: i64) -> Option<SystemTime> {
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// When a certificate stops being valid.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    system_time(validity(der)?.1)
}

/// When a certificate starts being valid (with notAfter, its lifetime: renewal is timed by
/// it).
pub fn not_before(der: &[u8]) -> Option<SystemTime> {
    system_time(validity(der)?.0)
}

/// The serial number as colon-separated hex bytes, as Vault and OpenBao write it
/// (`1f:0a:…`), leading zero bytes of the encoding left out.
pub fn serial(der: &[u8]) -> Option<String> {
    let cert = certificate(der)?;
    let bytes = cert.raw_serial();
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    let mut hex = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes[start..].iter().enumerate() {
        let sep = if i == 0 { "" } else { ":" };
        let _ = write!(hex, "{sep}{b:02x}");
    }
    Some(hex)
}

/// Every name a certificate carries: its subject CN and each subjectAltName by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// The subject's first commonName, when it is text (as [`identity`] reads it).
    pub common_name: Option<String>,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub emails: Vec<String>,
    /// Names of any other kind (otherName, directoryName, registeredID, ...), or not UTF-8,
    /// each as a short description.
    pub other: Vec<String>,
}

/// Every name `der` carries. `None` when the certificate or its subjectAltName does not
/// parse, or it has two subjectAltName extensions.
pub fn names(der: &[u8]) -> Option<Names> {
    let cert = certificate(der)?;
    let mut names = Names {
        common_name: common_name(&cert),
        ..Names::default()
    };
    let mut sans = cert
        .extensions()
        .iter()
        .filter(|extension| extension.oid == OID_X509_EXT_SUBJECT_ALT_NAME);
    let Some(san) = sans.next() else {
        return Some(names);
    };
    if sans.next().is_some() {
        return None;
    }
    let (_, san) = SubjectAlternativeName::from_der(san.value).ok()?;
    for name in &san.general_names {
        match *name {
            GeneralName::DNSName(dns) => names.dns.push(dns.to_string()),
            GeneralName::URI(uri) => names.uris.push(uri.to_string()),
            GeneralName::RFC822Name(email) => names.emails.push(email.to_string()),
            GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(bytes) {
                Ok(v4) => names.ips.push(IpAddr::from(v4)),
                Err(_) => match <[u8; 16]>::try_from(bytes) {
                    Ok(v6) => names.ips.push(IpAddr::from(v6)),
                    Err(_) => names.other.push(format!("IP:{bytes:02x?}")),
                },
            },
            ref other => names.other.push(format!("{other:?}")),
        }
    }
    Some(names)
}

/// The certificate's SubjectPublicKeyInfo, DER, as it is written in the certificate (to
/// compare with a private key's public half).
pub fn public_key(der: &[u8]) -> Option<Vec<u8>> {
    Some(certificate(der)?.public_key().raw.to_vec())
}

/// The kinds of key the daemon makes for its own certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on NIST P-256 (prime256v1).
    P256,
    /// ECDSA on NIST P-384 (secp384r1).
    P384,
    Ed25519,
}

impl KeyType {
    /// The name the config gives it.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

/// The key type of a DER SubjectPublicKeyInfo; `None` for any other (RSA, another curve) or
/// one that does not parse.
pub fn key_type(spki: &[u8]) -> Option<KeyType> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki).ok()?;
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_SIG_ED25519 {
        return Some(KeyType::Ed25519);
    }
    if *algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return None;
    }
    let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    if curve == OID_EC_P256 {
        Some(KeyType::P256)
    } else if curve == OID_NIST_EC_P384 {
        Some(KeyType::P384)
    } else {
        None
    }
}

/// Whether the certificate names itself as its issuer (a root CA, or a self-signed leaf):
/// its subject and issuer are the same bytes. A peer has its own copy of a root it trusts,
/// so a served chain leaves one out. `false` when it does not parse.
pub fn self_issued(der: &[u8]) -> bool {
    certificate(der).is_some_and(|cert| cert.subject().as_raw() == cert.issuer().as_raw())
}

/// The uncompressed point (`04 ‖ x ‖ y`, 65 bytes, as ring's ECDSA_P256_SHA256_FIXED takes
/// it) of a DER SubjectPublicKeyInfo that is id-ecPublicKey on prime256v1.
pub fn p256_point(spki: &[u8]) -> Option<Vec<u8>> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki).ok()?;
    let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    let p256 = spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == OID_EC_P256;
    let key = &spki.subject_public_key;
    let point: &[u8] = &key.data;
    (p256 && key.unused_bits == 0 && point.len() == 65 && point[0] == 4).then(|| point.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Authority, Leaf, Usage};
    use rcgen::{
        CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue, KeyPair,
        PublicKeyData,
    };
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    fn secs(time: SystemTime) -> i64 {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn ours(der: &[u8]) -> (Option<String>, Option<i64>) {
        (identity(der), not_after(der).map(secs))
    }

    fn der_of(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// A DER element: tag, definite length, the parts as its contents.
    fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let contents = parts.concat();
        let len = contents.len().to_be_bytes();
        let len = &len[len.iter().position(|&b| b != 0).unwrap_or(len.len() - 1)..];
        let mut out = vec![tag];
        match len {
            [n] if *n < 0x80 => out.push(*n),
            _ => {
                out.push(0x80 | len.len() as u8);
                out.extend_from_slice(len);
            }
        }
        out.extend(contents);
        out
    }

    /// commonName and subjectAltName.
    const CN: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
    const SAN: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x11];

    /// Subject commonNames: each its string type's tag and its bytes.
    type Cns<'a> = &'a [(u8, &'a [u8])];

    /// A Name of one RDN per commonName.
    fn cn_name(cns: Cns<'_>) -> Vec<u8> {
        let rdns: Vec<Vec<u8>> = cns
            .iter()
            .map(|&(tag, value)| tlv(0x31, &[&tlv(0x30, &[CN, &tlv(tag, &[value])])]))
            .collect();
        let rdns: Vec<&[u8]> = rdns.iter().map(Vec::as_slice).collect();
        tlv(0x30, &rdns)
    }

    /// A subjectAltName extension holding these bytes as its value.
    fn san_extension(value: &[u8]) -> Vec<u8> {
        tlv(0x30, &[SAN, &tlv(0x04, &[value])])
    }

    /// A certificate written element by element (what rcgen would not write: malformed
    /// names, odd string types, any time text), with an unchecked signature: these functions
    /// read fields, they do not verify.
    fn built(validity: [(u8, &[u8]); 2], subject: &[u8], extensions: &[Vec<u8>]) -> Vec<u8> {
        let ecdsa_sha256 = tlv(
            0x30,
            &[&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]],
        );
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let validity = tlv(
            0x30,
            &[
                &tlv(validity[0].0, &[validity[0].1]),
                &tlv(validity[1].0, &[validity[1].1]),
            ],
        );
        let extensions: Vec<&[u8]> = extensions.iter().map(Vec::as_slice).collect();
        let extensions = if extensions.is_empty() {
            Vec::new()
        } else {
            tlv(0xa3, &[&tlv(0x30, &extensions)])
        };
        let tbs = tlv(
            0x30,
            &[
                &[0xa0, 0x03, 0x02, 0x01, 0x02],
                &[0x02, 0x02, 0x1f, 0x0a],
                &ecdsa_sha256,
                &cn_name(&[(0x0c, b"issuer")]),
                &validity,
                subject,
                &key.subject_public_key_info(),
                &extensions,
            ],
        );
        tlv(
            0x30,
            &[&tbs, &ecdsa_sha256, &tlv(0x03, &[&[0, 0x30, 0x00]])],
        )
    }

    const NOT_BEFORE: (u8, &[u8]) = (0x17, b"250101000000Z");
    const NOT_AFTER: (u8, &[u8]) = (0x17, b"350101000000Z");

    /// A built certificate with these subject CNs and, when given, one subjectAltName of
    /// these GeneralNames.
    fn named(cns: Cns<'_>, san: Option<&[&[u8]]>) -> Vec<u8> {
        let extensions = match san {
            Some(names) => vec![san_extension(&tlv(0x30, names))],
            None => vec![],
        };
        built([NOT_BEFORE, NOT_AFTER], &cn_name(cns), &extensions)
    }

    /// The identity the rule gives to a certificate issued with these SANs and CN: the
    /// first URI, else the first DNS name, else (no SAN at all) the CN.
    fn expected_identity(sans: &[&str], cn: &str) -> Option<String> {
        let uri = sans.iter().find(|s| s.contains("://"));
        let dns = || {
            sans.iter()
                .find(|s| !s.contains("://") && s.parse::<std::net::IpAddr>().is_err())
        };
        match uri.or_else(dns) {
            Some(name) => Some(name.to_string()),
            None if sans.is_empty() && !cn.is_empty() => Some(cn.to_string()),
            None => None,
        }
    }

    /// Certificates with every mix of URI, DNS and IP SANs and CNs, and validity up to
    /// beyond 2050 (GeneralizedTime): the identity the rule names and the notAfter rcgen
    /// wrote.
    #[test]
    fn identity_and_expiry_of_issued_certificates() {
        let ca = Authority::new("x509 test").unwrap();
        let ca_der = der_of(&ca.cert_pem());
        assert_eq!(identity(&ca_der).as_deref(), Some("x509 test"));
        let ca_expiry = secs(not_after(&ca_der).unwrap()) - secs(SystemTime::now());
        assert!((3649 * 86_400..=3650 * 86_400).contains(&ca_expiry));
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
                    let der = der_of(&ca.issue(&leaf).unwrap().cert);
                    let expected = (expected_identity(sans, cn), Some(secs(leaf.not_after)));
                    assert_eq!(ours(&der), expected, "{sans:?} {cn:?} {days}");
                }
            }
        }
    }

    /// notBefore as rcgen wrote it; the serial without the encoding's leading zero bytes
    /// (rcgen writes a 0 before a high bit, so that the INTEGER stays positive).
    #[test]
    fn not_before_and_serial() {
        let ca = Authority::new("x509 test").unwrap();
        let serials = [
            (None, None),
            (Some(0x1f0a), Some("1f:0a")),
            (Some(0x80), Some("80")),
            (Some(u64::MAX), Some("ff:ff:ff:ff:ff:ff:ff:ff")),
        ];
        for days in [1, 30_000] {
            for (number, text) in serials {
                let mut leaf = Leaf::new("x", &[], Usage::Server, days);
                leaf.serial = number;
                let der = der_of(&ca.issue(&leaf).unwrap().cert);
                assert_eq!(secs(not_before(&der).unwrap()), secs(leaf.not_before));
                let serial = serial(&der).unwrap();
                match text {
                    Some(text) => assert_eq!(serial, text),
                    // rcgen's own: random bytes, written as hex pairs.
                    None => assert!(
                        serial
                            .split(':')
                            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()))
                            && !serial.starts_with("00"),
                        "{serial}"
                    ),
                }
            }
        }
    }

    /// A certificate's URI SAN wins over its DNS SANs wherever it stands, the first of
    /// several wins, and when that first one is empty or not UTF-8 there is no identity (no
    /// later name stands in for it).
    #[test]
    fn which_san_names_the_identity() {
        let cn: Cns<'_> = &[(0x0c, b"the-cn")];
        let uri = |s: &[u8]| tlv(0x86, &[s]);
        let dns = |s: &[u8]| tlv(0x82, &[s]);
        let ip = tlv(0x87, &[&[10, 0, 0, 1]]);
        let email = tlv(0x81, &[b"a@b.example"]);
        let cases: [(&[&[u8]], Option<&str>); 10] = [
            (
                &[
                    &dns(b"a.example"),
                    &uri(b"spiffe://x/1"),
                    &uri(b"spiffe://x/2"),
                ],
                Some("spiffe://x/1"),
            ),
            (
                &[&ip, &dns(b"a.example"), &dns(b"b.example")],
                Some("a.example"),
            ),
            (
                &[&uri(b""), &uri(b"spiffe://x/2"), &dns(b"a.example")],
                None,
            ),
            (&[&uri(b"spiffe://\xff"), &uri(b"spiffe://x/2")], None),
            (&[&dns(b""), &dns(b"b.example")], None),
            (&[&dns(b"\xc3("), &dns(b"b.example")], None),
            (&[&ip], None),
            (&[&email], None),
            (&[&email, &dns(b"\xc3\xa9.example")], Some("é.example")),
            // An empty GeneralNames: no SAN, so the CN.
            (&[], Some("the-cn")),
        ];
        for (names, expected) in cases {
            let der = named(cn, Some(names));
            assert_eq!(identity(&der).as_deref(), expected, "{names:02x?}");
        }
        assert_eq!(identity(&named(cn, None)).as_deref(), Some("the-cn"));
    }

    /// A subjectAltName that does not parse names nothing: not the CN. Of two, the first
    /// counts (rustls refuses such a certificate before the daemon asks).
    #[test]
    fn a_malformed_san_names_nothing() {
        let subject = cn_name(&[(0x0c, b"the-cn")]);
        let uri = |s: &[u8]| tlv(0x30, &[&tlv(0x86, &[s])]);
        let cases = [
            (vec![san_extension(&[0x30, 0x05, 0x86])], None),
            (vec![san_extension(&[0x04, 0x00])], None),
            (vec![san_extension(&[0x30, 0x02, 0x04, 0x00])], None),
            (
                vec![san_extension(&uri(b"s://1")), san_extension(&uri(b"s://2"))],
                Some("s://1"),
            ),
            (
                vec![
                    san_extension(&[0x30, 0x05, 0x86]),
                    san_extension(&uri(b"s://2")),
                ],
                None,
            ),
        ];
        for (extensions, expected) in cases {
            let der = built([NOT_BEFORE, NOT_AFTER], &subject, &extensions);
            assert_eq!(identity(&der).as_deref(), expected, "{extensions:02x?}");
            // The rest of the certificate still reads.
            assert!(not_after(&der).is_some());
        }
    }

    /// The first CN counts, when it is a UTF8String, PrintableString or IA5String; a
    /// BMPString, TeletexString or NumericString one names nothing, even with a usable CN
    /// after it; an empty or non-UTF-8 one names nothing.
    #[test]
    fn which_cn_names_the_identity() {
        let cases: [(Cns<'_>, Option<&str>); 9] = [
            (&[(0x0c, "ünï".as_bytes())], Some("ünï")),
            (&[(0x13, b"printable")], Some("printable")),
            (&[(0x16, b"ia5")], Some("ia5")),
            (&[(0x13, b"first"), (0x0c, b"second")], Some("first")),
            (&[(0x1e, b"\x00b\x00m\x00p"), (0x0c, b"second")], None),
            (&[(0x14, b"teletex")], None),
            (&[(0x12, b"123")], None),
            (&[(0x0c, b"")], None),
            (&[(0x0c, b"\xff")], None),
        ];
        for (cns, expected) in cases {
            assert_eq!(
                identity(&named(cns, None)).as_deref(),
                expected,
                "{cns:02x?}"
            );
        }
        assert_eq!(identity(&named(&[], None)), None);
    }

    /// rcgen's own string types and a CN it writes as a custom attribute: the same rule.
    #[test]
    fn cn_string_types_rcgen_writes() {
        let key = KeyPair::generate().unwrap();
        let issue = |dn: DistinguishedName, san: Option<&[u8]>| {
            let mut params = CertificateParams::default();
            params.distinguished_name = dn;
            if let Some(value) = san {
                params.custom_extensions = vec![CustomExtension::from_oid_content(
                    &[2, 5, 29, 17],
                    value.to_vec(),
                )];
            }
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let dn = |value: DnValue| {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, value);
            dn
        };
        let printable = DnValue::PrintableString("p-cn".try_into().unwrap());
        assert_eq!(
            identity(&issue(dn(printable), None)).as_deref(),
            Some("p-cn")
        );
        let bmp = DnValue::BmpString("b-cn".try_into().unwrap());
        assert_eq!(identity(&issue(dn(bmp), None)), None);
        let mut two = dn(DnValue::Utf8String("first".into()));
        two.push(DnType::CustomDnType(vec![2, 5, 4, 3]), "second");
        assert_eq!(identity(&issue(two, None)).as_deref(), Some("first"));
        // A SAN extension rcgen carries as given: a URI that is not UTF-8.
        let utf8 = DnValue::Utf8String("cn".into());
        let san = tlv(0x30, &[&tlv(0x86, &[b"\xff"]), &tlv(0x82, &[b"a.example"])]);
        assert_eq!(identity(&issue(dn(utf8), Some(&san))), None);
    }

    /// Every input of the identity fuzz corpus reads without a panic, an identity is never
    /// empty, and enough of the corpus is certificates for that to mean something.
    #[test]
    fn the_fuzz_corpus_reads_without_panics() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/identity");
        let mut certificates = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let der = std::fs::read(entry.unwrap().path()).unwrap();
            let (id, _) = ours(&der);
            assert_ne!(id.as_deref(), Some(""), "{der:02x?}");
            let _ = (not_before(&der), serial(&der), p256_point(&der));
            let _ = (
                names(&der),
                public_key(&der),
                key_type(&der),
                self_issued(&der),
            );
            certificates += usize::from(certificate(&der).is_some());
        }
        // 34 of the 312 entries were certificates x509-parser read when this was written.
        assert!(
            certificates >= 20,
            "only {certificates} corpus entries parsed as certificates"
        );
    }

    /// Every name of an issued certificate, by kind; its public key is the one it was made
    /// for; a root is self-issued and a leaf is not.
    #[test]
    fn names_key_and_issuer_of_an_issued_certificate() {
        let ca = Authority::new("x509 test").unwrap();
        let sans = [
            "a.example",
            "B.example",
            "spiffe://fleet/a",
            "10.0.0.1",
            "::1",
        ];
        let pem = ca
            .issue(&Leaf::new("the-cn", &sans, Usage::Server, 1))
            .unwrap();
        let der = der_of(&pem.cert);
        let got = names(&der).unwrap();
        assert_eq!(got.common_name.as_deref(), Some("the-cn"));
        assert_eq!(got.dns, ["a.example", "B.example"]);
        assert_eq!(got.uris, ["spiffe://fleet/a"]);
        let ips: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(got.ips, ips);
        assert!(got.emails.is_empty() && got.other.is_empty());
        let key = KeyPair::from_pem(&pem.key).unwrap();
        assert_eq!(public_key(&der).unwrap(), key.subject_public_key_info());
        assert_eq!(key_type(&public_key(&der).unwrap()), Some(KeyType::P256));
        assert!(!self_issued(&der));
        assert!(self_issued(&der_of(&ca.cert_pem())));
        // No SAN at all: only the CN.
        let bare = der_of(
            &ca.issue(&Leaf::new("cn", &[], Usage::Server, 1))
                .unwrap()
                .cert,
        );
        assert_eq!(
            names(&bare).unwrap(),
            Names {
                common_name: Some("cn".into()),
                ..Names::default()
            }
        );
        // An email SAN and an IP of the wrong length are told apart from the rest.
        let odd = named(
            &[(0x0c, b"cn")],
            Some(&[&tlv(0x81, &[b"a@b.example"]), &tlv(0x87, &[&[1, 2, 3]])]),
        );
        let got = names(&odd).unwrap();
        assert_eq!(got.emails, ["a@b.example"]);
        assert_eq!(got.other.len(), 1, "{got:?}");
        // Two subjectAltName extensions: no answer rather than a guess.
        let uri = |s: &[u8]| tlv(0x30, &[&tlv(0x86, &[s])]);
        let two = built(
            [NOT_BEFORE, NOT_AFTER],
            &cn_name(&[(0x0c, b"cn")]),
            &[san_extension(&uri(b"s://1")), san_extension(&uri(b"s://2"))],
        );
        assert_eq!(names(&two), None);
    }

    /// P-256, P-384 and Ed25519 keys are told apart; anything else is no key type.
    #[test]
    fn key_types() {
        for (alg, expected) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, KeyType::P256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyType::P384),
            (&rcgen::PKCS_ED25519, KeyType::Ed25519),
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            assert_eq!(key_type(&key.subject_public_key_info()), Some(expected));
        }
        assert_eq!(key_type(b"\x30\x00"), None);
        let spki = KeyPair::generate().unwrap().subject_public_key_info();
        for len in 0..spki.len() {
            assert_eq!(key_type(&spki[..len]), None);
        }
    }

    /// Every strict prefix of a certificate is refused, without a panic.
    #[test]
    fn truncations_are_refused() {
        let ca = Authority::new("t").unwrap();
        let leaf = Leaf::new("cn", &["spiffe://x/y"], Usage::Client, 10);
        let der = der_of(&ca.issue(&leaf).unwrap().cert);
        for len in 0..der.len() {
            assert_eq!(ours(&der[..len]), (None, None), "prefix of {len} bytes");
            assert_eq!(serial(&der[..len]), None);
            assert_eq!(not_before(&der[..len]), None);
            assert_eq!(names(&der[..len]), None);
            assert_eq!(public_key(&der[..len]), None);
            assert!(!self_issued(&der[..len]));
        }
    }

    /// UTCTime years 50-99 are the 1900s; dates count from the epoch across leap years;
    /// before 1970 is no time; a time without its Z, with a 13th month, a letter or a
    /// missing digit does not parse.
    #[test]
    fn times() {
        let at = |field: (u8, &[u8])| validity(&built([field, field], &cn_name(&[]), &[]));
        let utc = |text: &'static [u8]| at((0x17, text)).map(|(_, after)| after);
        let generalized = |text: &'static [u8]| at((0x18, text)).map(|(_, after)| after);
        assert_eq!(utc(b"700101000000Z"), Some(0));
        assert_eq!(utc(b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(utc(b"500101000000Z"), Some(-631_152_000));
        assert_eq!(generalized(b"20000301000000Z"), Some(951_868_800));
        assert_eq!(generalized(b"99991231235959Z"), Some(253_402_300_799));
        let before_1970 = built([(0x17, b"500101000000Z"); 2], &cn_name(&[]), &[]);
        assert_eq!(
            (not_before(&before_1970), not_after(&before_1970)),
            (None, None)
        );
        for bad in [
            &b"700101000000"[..],
            b"701301000000Z",
            b"7001010000a0Z",
            b"70010100000Z",
        ] {
            assert_eq!(at((0x17, bad)), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    /// The P-256 point of an SPKI, as ring's key holds it; other curves are refused.
    #[test]
    fn p256_points() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = key.subject_public_key_info();
        let point = p256_point(&spki).unwrap();
        assert_eq!(point, key.public_key_raw());
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert_eq!(p256_point(&p384.subject_public_key_info()), None);
        let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(p256_point(&ed25519.subject_public_key_info()), None);
        for len in 0..spki.len() {
            assert_eq!(p256_point(&spki[..len]), None);
        }
    }

    /// clientAuth, serverAuth and clientAuth, and no extended key usage at all allow a
    /// client's use; serverAuth alone does not.
    #[test]
    fn client_auth_usage() {
        use crate::pki::{Authority, Leaf, Usage};
        let ca = Authority::new("ca").unwrap();
        let der = |usage: Option<Usage>| {
            let mut leaf = Leaf::new("x", &["x.test"], Usage::Server, 1);
            leaf.usage = usage;
            let pem = ca.issue(&leaf).unwrap();
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap()
        };
        assert_eq!(allows_client_auth(&der(Some(Usage::Server))), Some(false));
        assert_eq!(allows_client_auth(&der(Some(Usage::Client))), Some(true));
        assert_eq!(allows_client_auth(&der(Some(Usage::Device))), Some(true));
        assert_eq!(allows_client_auth(&der(None)), Some(true));
        assert_eq!(allows_client_auth(b"junk"), None);
    }
}
