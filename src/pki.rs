//! A development PKI: one CA, a server certificate and a client certificate, made with rcgen.
//!
//! For `vitalsd --dev`, `vitalsctl certs init` and the tests. Devices in a fleet use
//! certificates from the operator's own CA (see certs/README.md), never these.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// Where `--dev` keeps its PKI, and the address it serves on: the same for vitalsd and
/// vitalsctl.
pub const DEV_DIR: &str = "certs/dev";
pub const DEV_ADDR: &str = "127.0.0.1:50051";

/// The files a dev PKI directory holds.
pub const FILES: [&str; 5] = [
    "ca.crt",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
];

/// The identity of the dev client certificate (its URI SAN).
pub const DEV_CLIENT_IDENTITY: &str = "spiffe://vitals.dev/client";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("`{0}` is not a valid subject alternative name")]
    San(String),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem")
            .field("cert", &self.cert)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// What a leaf certificate says about its holder.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub common_name: String,
    /// DNS names, IP addresses (parsed as such) and `scheme://` URIs.
    pub sans: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Client or server usage; `None` leaves the extended key usage out.
    pub usage: Option<Usage>,
    /// The serial number; `None` lets rcgen choose one.
    pub serial: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// A device's own certificate: it serves (serverAuth) and is also the client
    /// certificate of its remote_write push (clientAuth), which a receiver that checks the
    /// usage refuses otherwise.
    Device,
}

impl Leaf {
    /// A certificate valid from an hour ago for `days` days.
    pub fn new(common_name: &str, sans: &[&str], usage: Usage, days: u64) -> Leaf {
        let now = SystemTime::now();
        Leaf {
            common_name: common_name.to_string(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(days * 86_400),
            usage: Some(usage),
            serial: None,
        }
    }
}

/// A certificate authority that can issue leaf certificates.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    /// A new self-signed CA valid for ten years, that issues leaf certificates only.
    pub fn new(common_name: &str) -> Result<Authority, Error> {
        Authority::root(common_name, 0)
    }

    /// A new self-signed CA valid for ten years, with up to `path_len` intermediate CAs
    /// under it.
    pub fn root(common_name: &str, path_len: u8) -> Result<Authority, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(3650 * 86_400)).into();
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Authority { issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// An intermediate CA under this one (made with a `path_len` of 1 or more), valid for
    /// ten years, that issues leaf certificates only.
    pub fn intermediate(&self, common_name: &str) -> Result<Authority, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(3650 * 86_400)).into();
        let issuer = CertifiedIssuer::signed_by(params, KeyPair::generate()?, &self.issuer)?;
        Ok(Authority { issuer })
    }

    /// Issues a leaf certificate with a fresh P-256 key.
    pub fn issue(&self, leaf: &Leaf) -> Result<Pem, Error> {
        let key = KeyPair::generate()?;
        Ok(Pem {
            cert: self.sign(leaf, &key)?,
            key: key.serialize_pem(),
        })
    }

    /// Issues a leaf certificate (PEM) for a public key its holder keeps, as a pki engine
    /// signs a CSR's key.
    pub fn sign(&self, leaf: &Leaf, key: &impl rcgen::PublicKeyData) -> Result<String, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&leaf.common_name);
        params.subject_alt_names = leaf.sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
        params.not_before = leaf.not_before.into();
        params.not_after = leaf.not_after.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match leaf.usage {
            Some(Usage::Server) => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Some(Usage::Client) => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Some(Usage::Device) => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            None => vec![],
        };
        params.use_authority_key_identifier_extension = true;
        params.serial_number = leaf.serial.map(SerialNumber::from);
        Ok(params.signed_by(key, &self.issuer)?.pem())
    }
}

impl Authority {
    /// A certificate revocation list (PEM) revoking the certificates with these serial
    /// numbers, valid from an hour ago for a day.
    pub fn revoke(&self, serials: &[u64]) -> Result<String, Error> {
        let now = SystemTime::now();
        let params = rcgen::CertificateRevocationListParams {
            this_update: (now - Duration::from_secs(3600)).into(),
            next_update: (now + Duration::from_secs(86_400)).into(),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: (now - Duration::from_secs(60)).into(),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A SAN from text: an IP address, a URI (it has `://`), else a DNS name.
pub fn san(value: &str) -> Result<SanType, Error> {
    let bad = || Error::San(value.to_string());
    if let Ok(ip) = value.parse() {
        return Ok(SanType::IpAddress(ip));
    }
    if value.contains("://") {
        return Ok(SanType::URI(value.try_into().map_err(|_| bad())?));
    }
    let dns_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*');
    if value.is_empty() || !value.chars().all(dns_char) {
        return Err(bad());
    }
    Ok(SanType::DnsName(value.try_into().map_err(|_| bad())?))
}

/// The dev PKI as written to a directory.
pub struct DevPki {
    pub ca: String,
    pub server: Pem,
    pub client: Pem,
}

impl DevPki {
    /// A CA, a server certificate for localhost, 127.0.0.1, ::1 and `extra_sans`, and a
    /// client certificate whose identity is [`DEV_CLIENT_IDENTITY`].
    pub fn generate(extra_sans: &[String]) -> Result<DevPki, Error> {
        let ca = Authority::new("vitals dev CA")?;
        let mut sans = vec!["localhost", "127.0.0.1", "::1"];
        sans.extend(extra_sans.iter().map(String::as_str));
        let server = ca.issue(&Leaf::new("vitalsd dev server", &sans, Usage::Device, 825))?;
        let client = ca.issue(&Leaf::new(
            "vitals dev client",
            &[DEV_CLIENT_IDENTITY],
            Usage::Client,
            825,
        ))?;
        Ok(DevPki {
            ca: ca.cert_pem(),
            server,
            client,
        })
    }

    /// Writes the five files into `dir` (created if needed); private keys get mode 0600.
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let files = [
            (FILES[0], &self.ca, 0o644),
            (FILES[1], &self.server.cert, 0o644),
            (FILES[2], &self.server.key, 0o600),
            (FILES[3], &self.client.cert, 0o644),
            (FILES[4], &self.client.key, 0o600),
        ];
        for (file, text, mode) in files {
            write_file(&dir.join(file), text, mode)?;
        }
        Ok(())
    }
}

/// Makes the dev PKI in `dir` unless all its files are already there. Returns whether it
/// wrote anything.
pub fn ensure_dev(dir: &Path) -> Result<bool, Error> {
    if FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(false);
    }
    DevPki::generate(&[])?.write(dir)?;
    Ok(true)
}

/// Writes `text` to `path` with `mode`, replacing what was there.
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    // Remove first so a new mode applies even when the file existed with another one.
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The dev PKI writes five files, keys private, and a second call leaves them alone.
    #[test]
    fn dev_pki_writes_files_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_dev(dir.path()).unwrap());
        for f in FILES {
            let meta = fs::metadata(dir.path().join(f)).unwrap();
            let expected = if f.ends_with(".key") { 0o600 } else { 0o644 };
            assert_eq!(meta.permissions().mode() & 0o777, expected, "{f}");
        }
        let before = fs::read(dir.path().join("ca.crt")).unwrap();
        assert!(!ensure_dev(dir.path()).unwrap());
        assert_eq!(before, fs::read(dir.path().join("ca.crt")).unwrap());
    }

    /// A SAN that is neither an IP, a URI nor a DNS name is refused.
    #[test]
    fn bad_san_is_refused() {
        let ca = Authority::new("t").unwrap();
        let leaf = Leaf::new("x", &["not a name"], Usage::Server, 1);
        assert!(matches!(ca.issue(&leaf), Err(Error::San(_))));
    }

    /// Debug never shows a private key.
    #[test]
    fn debug_redacts_key() {
        let pem = DevPki::generate(&[]).unwrap().server;
        assert!(!format!("{pem:?}").contains("PRIVATE KEY"));
    }
}
