//! TLS: the server's rustls config (mutual TLS, TLS 1.2 and 1.3, ALPN h2), the client
//! configs vitalsctl and the tests use, and the peer identity of a client certificate.
//!
//! Configs are built from resolved material: certificate files and a private [`Key`]
//! already read (from a file, or from a secret by [`crate::secrets`]). The server config is
//! part of what a reload swaps, so new connections get new certificates and established
//! ones are untouched.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject},
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};

/// The ALPN protocol gRPC speaks.
pub const ALPN_H2: &[u8] = b"h2";
/// HTTP/1.1, which the server also offers for the plain pages (`GET /metrics`): Prometheus
/// and curl scrape over it by default.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    BadKey { path: PathBuf },
    #[error("{path}: the private key is empty")]
    EmptyKey { path: PathBuf },
    #[error("{path}: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("{path} is readable by group or others (mode {mode:04o}); run `chmod 600 {path}`")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("client CA {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("certificate {cert} and key {key} do not go together: {source}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("secret `{name}` was not pulled")]
    MissingSecret { name: String },
}

/// The crypto provider every config here uses: ring, small and fast on ARM.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's provider: ring, with the cipher suites in the order the server picks them
/// (it ignores the client's order, see `server_config`). SHA-256 suites first: TLS 1.3's
/// key schedule hashes every flight, and SHA-384 (SHA-512's compression) has no hardware
/// help on x86 or on most ARM cores (SHA-256 has, with the ARMv8 crypto extensions and
/// SHA-NI), so AES-256-GCM-SHA384, many clients' first choice, made a resumed handshake
/// mostly hashing. AES-128-GCM where the CPU has AES instructions, ChaCha20-Poly1305 where
/// it has none (the Raspberry Pi 4's Cortex-A72, every ARMv7 board), where it is several
/// times faster than AES in software. BENCHMARKS.md has the figures.
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as suite;
    let mut provider = rustls::crypto::ring::default_provider();
    // Each pair: the AES-128 suite, then the ChaCha20 one (swapped without AES instructions).
    let mut tls13 = [
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let mut ecdsa = [
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let mut rsa = [
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    if !has_aes_instructions() {
        tls13.reverse();
        ecdsa.reverse();
        rsa.reverse();
    }
    let mut suites = tls13.to_vec();
    suites.push(suite::TLS13_AES_256_GCM_SHA384);
    suites.extend(ecdsa);
    suites.extend(rsa);
    suites.extend([
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ]);
    // Whatever else this rustls offers, after ours (none today).
    for s in rustls::crypto::ring::DEFAULT_CIPHER_SUITES {
        if !suites.contains(s) {
            suites.push(*s);
        }
    }
    provider.cipher_suites = suites;
    Arc::new(provider)
}

/// Whether the CPU has AES instructions (AES-NI, the ARMv8 crypto extensions). Unknown on
/// 32-bit ARM on stable Rust: no, which is what ARMv7 boards have.
fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull");
    #[allow(unreachable_code)]
    false
}

/// Reads every certificate of a PEM file (a regular file of at most
/// [`crate::file::BUNDLE_MAX`] bytes: CA bundles come through here too).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = crate::file::read(path, crate::file::BUNDLE_MAX).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_certs(&pem, path)
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads a PEM private key (a regular file of at most [`crate::file::PEM_MAX`] bytes),
/// refusing a file that group or others can read.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let (file, size) = crate::file::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::KeyPermissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    let pem = zeroize::Zeroizing::new(
        crate::file::read_opened(file, size, crate::file::PEM_MAX).map_err(read_err)?,
    );
    parse_key(&pem, path)
}

/// Parses a PEM private key held in memory (a pulled secret); `origin` names it in errors.
pub fn parse_key(pem: &[u8], origin: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    if pem.trim_ascii().is_empty() {
        return Err(Error::EmptyKey {
            path: origin.to_path_buf(),
        });
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| Error::BadKey {
        path: origin.to_path_buf(),
    })
}

/// A private key, and where it came from (its path, or `secret:NAME`) for messages.
pub struct Key {
    pub der: PrivateKeyDer<'static>,
    pub origin: PathBuf,
}

impl Key {
    /// Reads a key file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Key, Error> {
        Ok(Key {
            der: load_key(path)?,
            origin: path.to_path_buf(),
        })
    }
}

fn roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| Error::ClientCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// What the server presents and whom it trusts, loaded and checked.
pub struct ServerIdentity {
    pub config: Arc<ServerConfig>,
    /// When the server's own certificate expires, for the health check.
    pub not_after: Option<SystemTime>,
    /// The client certificate verifier in `config`, to check open connections again.
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// The server certificate's identity (as [`identity`] reads a client's): the device's
    /// name in what it pushes.
    pub identity: Option<String>,
}

/// Reads certificate revocation lists: PEM files (one or more `X509 CRL` blocks) or DER.
fn load_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let mut crls = Vec::new();
    for path in paths {
        let bytes =
            crate::file::read(path, crate::file::BUNDLE_MAX).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
        let bad = |reason: String| Error::BadPem {
            path: path.clone(),
            reason,
        };
        if bytes.starts_with(b"-----") {
            let pems = CertificateRevocationListDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if pems.is_empty() {
                return Err(bad("no X509 CRL in it".into()));
            }
            crls.extend(pems);
        } else {
            crls.push(CertificateRevocationListDer::from(bytes));
        }
    }
    Ok(crls)
}

/// Builds the server config: the chain in `cert` (without a self-signed root) and `key`,
/// client certificates required
/// and verified against the `client_ca` bundle and the revocation lists in `crl` (of the
/// client's own certificate; one whose issuer has no list is accepted), TLS 1.3 and 1.2,
/// ALPN h2 and http/1.1.
pub fn server_config(
    cert: &Path,
    key: Key,
    client_ca: &Path,
    crl: &[PathBuf],
) -> Result<ServerIdentity, Error> {
    let mut chain = load_certs(cert)?;
    // A self-signed root after the leaf is left out of what the server sends: a peer
    // verifies against its own copy of the roots it trusts, so it only costs bytes in every
    // handshake (RFC 8446, 4.4.2: it MAY be omitted).
    let mut first = true;
    chain.retain(|c| std::mem::take(&mut first) || !crate::x509::self_issued(c));
    let roots = roots(client_ca)?;
    let provider = server_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(load_crls(crl)?)
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| Error::ClientCa {
            path: client_ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    let not_after = not_after(&chain[0]);
    let own_identity = identity(&chain[0]);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain, key.der)
        .map_err(|source| Error::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.origin,
            source,
        })?;
    // Resumption by stateless tickets, so a prober that reconnects every few seconds skips
    // the handshake's signatures (BENCHMARKS.md has the figures). The ticket key belongs to
    // this config: a reload builds a new one, so a session never outlives a new client CA
    // or CRL. No session is kept in memory (a cache of client chains stayed pinned after a
    // connection storm, RELIABILITY.md). A resumed connection carries the chain its full
    // handshake verified, so the identity and the ACL see the same peer; the transport
    // refuses one whose certificate has since passed its notAfter.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    // The server picks the suite (server_provider's order): a client's preference for
    // AES-256-GCM-SHA384 costs the device more than it buys.
    config.ignore_client_order = true;
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.send_tls13_tickets = 1;
    // h2 first: a client offering both (curl) gets HTTP/2.
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(ServerIdentity {
        config: Arc::new(config),
        not_after,
        verifier,
        identity: own_identity,
    })
}

/// How a client proves itself and checks the server.
pub enum ClientAuth<'a> {
    /// A client certificate and key (PEM files).
    Certificate { cert: &'a Path, key: &'a Path },
    /// No client certificate: the server will refuse the handshake.
    Anonymous,
}

/// A client config that trusts `ca` and offers ALPN h2.
pub fn client_config(ca: &Path, auth: ClientAuth<'_>) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots(ca)?);
    with_auth(builder, auth)
}

/// A client config that accepts any server certificate (`-tls-no-verify`): the connection is
/// encrypted but the server is not authenticated. Handshake signatures are still checked, so
/// the peer must hold the key of the certificate it shows.
pub fn client_config_no_verify(auth: ClientAuth<'_>) -> Result<ClientConfig, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    with_auth(builder, auth)
}

/// Finishes a client config: the client certificate (or none) and ALPN h2.
fn with_auth(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    auth: ClientAuth<'_>,
) -> Result<ClientConfig, Error> {
    let mut config = match auth {
        ClientAuth::Certificate { cert, key } => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|source| Error::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                source,
            })?,
        ClientAuth::Anonymous => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Accepts every server certificate; verifies handshake signatures with the provider's
/// algorithms.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The identity a client certificate names: its first URI SAN, else its first DNS SAN, else
/// (only when it has no SAN at all) its subject CN. `None` when it names nothing usable.
pub fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    crate::x509::identity(cert.as_ref())
}

/// When a certificate stops being valid.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    crate::x509::not_after(cert.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Authority, DevPki, Leaf, Usage, write_file};

    /// Runs a handshake between the two in memory.
    fn handshake(c: &mut rustls::ClientConnection, s: &mut rustls::ServerConnection) {
        let mut buf = Vec::new();
        while c.is_handshaking() || s.is_handshaking() {
            buf.clear();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets().unwrap();
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets().unwrap();
        }
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// Identity prefers the URI SAN, then the DNS SAN; the CN counts only in a certificate
    /// without any SAN (one with only an IP SAN names no identity).
    #[test]
    fn identity_order() {
        let ca = Authority::new("t").unwrap();
        let issue = |sans: &[&str]| {
            der(&ca
                .issue(&Leaf::new("the-cn", sans, Usage::Client, 1))
                .unwrap()
                .cert)
        };
        assert_eq!(
            identity(&issue(&["dev.example", "spiffe://fleet/prober"])).as_deref(),
            Some("spiffe://fleet/prober")
        );
        assert_eq!(
            identity(&issue(&["dev.example", "10.0.0.1"])).as_deref(),
            Some("dev.example")
        );
        assert_eq!(identity(&issue(&["10.0.0.1"])).as_deref(), None);
        assert_eq!(identity(&issue(&[])).as_deref(), Some("the-cn"));
    }

    /// Garbage bytes give no identity rather than a panic.
    #[test]
    fn identity_of_garbage_is_none() {
        assert_eq!(
            identity(&CertificateDer::from(vec![0x30, 0x03, 0x01])),
            None
        );
        assert_eq!(identity(&CertificateDer::from(Vec::new())), None);
    }

    /// A key readable by others is refused with the chmod hint; mode 0600 is accepted.
    #[test]
    fn key_permissions_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(&[]).unwrap();
        let path = dir.path().join("k.key");
        write_file(&path, &pki.server.key, 0o644).unwrap();
        let err = load_key(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        write_file(&path, &pki.server.key, 0o600).unwrap();
        load_key(&path).unwrap();
        write_file(&path, "\n", 0o600).unwrap();
        assert!(matches!(load_key(&path), Err(Error::EmptyKey { .. })));
    }

    /// A server config builds from the dev PKI, and a mismatched key is named.
    #[test]
    fn the_server_picks_a_sha256_suite_over_the_clients_first_choice() {
        let dir = tempfile::tempdir().unwrap();
        DevPki::generate(&[]).unwrap().write(dir.path()).unwrap();
        let p = |name: &str| dir.path().join(name);
        let server = server_config(
            &p("server.crt"),
            Key::load(&p("server.key")).unwrap(),
            &p("ca.crt"),
            &[],
        )
        .unwrap()
        .config;
        // A client that puts AES-256-GCM-SHA384 first, as rustls and OpenSSL do.
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![
            rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(load_certs(&p("ca.crt")).unwrap());
        let client = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                load_certs(&p("client.crt")).unwrap(),
                load_key(&p("client.key")).unwrap(),
            )
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        handshake(&mut c, &mut s);
        let suite = s.negotiated_cipher_suite().unwrap().suite();
        assert!(
            [
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            ]
            .contains(&suite),
            "{suite:?}"
        );
    }

    #[test]
    fn server_config_from_dev_pki() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::generate(&[]).unwrap();
        pki.write(dir.path()).unwrap();
        let (cert, ca) = (dir.path().join("server.crt"), dir.path().join("ca.crt"));
        let key = Key::load(&dir.path().join("server.key")).unwrap();
        let identity = server_config(&cert, key, &ca, &[]).unwrap();
        assert!(identity.not_after.unwrap() > SystemTime::now());
        assert_eq!(
            identity.config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let wrong = Key::load(&dir.path().join("client.key")).unwrap();
        let err = server_config(&cert, wrong, &ca, &[]).err().unwrap();
        assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    }

    /// A served chain leaves its self-signed root out and keeps its intermediate: the client
    /// sees the leaf and the intermediate, and verifies them against the root it has.
    #[test]
    fn the_self_signed_root_is_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let root = Authority::root("root", 1).unwrap();
        let middle = root.intermediate("intermediate").unwrap();
        let server = middle
            .issue(&Leaf::new("s", &["localhost"], Usage::Server, 1))
            .unwrap();
        let client = root
            .issue(&Leaf::new("c", &["spiffe://t/c"], Usage::Client, 1))
            .unwrap();
        let p = |name: &str| dir.path().join(name);
        let bundle = format!("{}{}{}", server.cert, middle.cert_pem(), root.cert_pem());
        std::fs::write(p("server.crt"), bundle).unwrap();
        write_file(&p("server.key"), &server.key, 0o600).unwrap();
        std::fs::write(p("ca.crt"), root.cert_pem()).unwrap();
        std::fs::write(p("client.crt"), &client.cert).unwrap();
        write_file(&p("client.key"), &client.key, 0o600).unwrap();
        let served = server_config(
            &p("server.crt"),
            Key::load(&p("server.key")).unwrap(),
            &p("ca.crt"),
            &[],
        )
        .unwrap()
        .config;
        let client = client_config(
            &p("ca.crt"),
            ClientAuth::Certificate {
                cert: &p("client.crt"),
                key: &p("client.key"),
            },
        )
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(served).unwrap();
        handshake(&mut c, &mut s);
        let sent = c.peer_certificates().unwrap();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].as_ref(), der(&middle.cert_pem()).as_ref());
        assert!(!sent.iter().any(|c| crate::x509::self_issued(c)));
    }

    /// A file without certificates is a clear error, not an empty trust store.
    #[test]
    fn empty_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "nothing here").unwrap();
        assert!(matches!(
            load_certs(&path),
            Err(Error::NoCertificate { .. })
        ));
    }
}
