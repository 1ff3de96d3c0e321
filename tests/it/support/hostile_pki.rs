//! A pki that misbehaves on purpose, where OpenBao cannot: an HTTPS server on loopback that
//! logs anyone in (`auth/*/login`) and answers `POST /v1/pki/sign/{role}` as its
//! [`Answer`] says: a good certificate for the CSR's key and the names asked for, or one
//! for another key, with other names, already expired, of a CA the device does not trust,
//! or one that would be due for renewal at once. Everything it signs is real (rcgen, the
//! CSR parsed by x509-parser); only its judgement is bad. It counts the sign requests.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateSigningRequestDer, pem::PemObject};
use tempfile::TempDir;
use vitals::{
    pki::{Authority, Leaf, Usage},
    x509::KeyType,
};

/// How the pki answers a sign request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The CSR's key, the names asked for, valid from 30 s ago for the TTL asked (90 s when
    /// none), from the CA the device trusts.
    Good,
    /// The names asked for, but a key the pki made (the device does not have it).
    OtherKey,
    /// The CSR's key, but `DNS:evil.example` in place of the names asked for.
    OtherNames,
    /// The CSR's key and names, expired an hour ago.
    Expired,
    /// The CSR's key and names, signed by a CA the device does not trust.
    Untrusted,
    /// The CSR's key and names, valid for 20 s only.
    ShortLived,
}

pub struct HostilePki {
    pub addr: SocketAddr,
    dir: TempDir,
    answer: Arc<Mutex<Answer>>,
    signs: Arc<AtomicU64>,
}

impl HostilePki {
    /// Serves on a free loopback port until dropped (with the test's runtime).
    pub async fn start() -> HostilePki {
        let dir = tempfile::tempdir().unwrap();
        let tls_ca = Authority::new("hostile pki TLS").unwrap();
        let server = tls_ca
            .issue(&Leaf::new("pki", &["127.0.0.1"], Usage::Server, 1))
            .unwrap();
        std::fs::write(dir.path().join("tls-ca.pem"), tls_ca.cert_pem()).unwrap();
        let issuer = Arc::new(Authority::new("hostile pki issuer").unwrap());
        std::fs::write(dir.path().join("issuer.pem"), issuer.cert_pem()).unwrap();
        let stranger = Arc::new(Authority::new("a CA nobody trusts").unwrap());

        let config = rustls::ServerConfig::builder_with_provider(vitals::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![
                    rustls::pki_types::CertificateDer::from_pem_slice(server.cert.as_bytes())
                        .unwrap(),
                ],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(Answer::Good));
        let signs = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Signer {
            issuer,
            stranger,
            answer: answer.clone(),
            signs: signs.clone(),
        });
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.answer(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HostilePki {
            addr,
            dir,
            answer,
            signs,
        }
    }

    /// From now on, sign requests get `answer`.
    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// How many sign requests came so far.
    pub fn signs(&self) -> u64 {
        self.signs.load(Ordering::SeqCst)
    }

    /// The CA of its HTTPS certificate (`tls.issue.ca_cert`).
    pub fn tls_ca(&self) -> PathBuf {
        self.dir.path().join("tls-ca.pem")
    }

    /// The CA it signs with when it behaves (`tls.issue.issuer_ca`).
    pub fn issuer_ca(&self) -> PathBuf {
        self.dir.path().join("issuer.pem")
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

struct Signer {
    issuer: Arc<Authority>,
    stranger: Arc<Authority>,
    answer: Arc<Mutex<Answer>>,
    signs: Arc<AtomicU64>,
}

type Response = hyper::Response<Full<Bytes>>;

fn json(status: u16, body: serde_json::Value) -> Response {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

impl Signer {
    async fn answer(&self, request: hyper::Request<hyper::body::Incoming>) -> Response {
        let path = request.uri().path().to_string();
        let Ok(body) = request.into_body().collect().await else {
            return json(400, serde_json::json!({"errors": ["no body"]}));
        };
        let body: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap_or_default();
        if path.starts_with("/v1/auth/") && path.ends_with("/login") {
            return json(
                200,
                serde_json::json!({"auth": {"client_token": "hostile"}}),
            );
        }
        if path == "/v1/auth/token/revoke-self" {
            return json(200, serde_json::json!({}));
        }
        if !path.starts_with("/v1/pki/sign/") {
            return json(404, serde_json::json!({"errors": ["no handler"]}));
        }
        self.signs.fetch_add(1, Ordering::SeqCst);
        match self.sign(&body) {
            Ok(certificate) => json(
                200,
                serde_json::json!({"data": {
                    "certificate": certificate,
                    "issuing_ca": self.issuer.cert_pem(),
                    "ca_chain": [self.issuer.cert_pem()],
                }}),
            ),
            Err(reason) => json(400, serde_json::json!({"errors": [reason]})),
        }
    }

    /// A certificate for the sign request `body`, as the current [`Answer`] says.
    fn sign(&self, body: &serde_json::Value) -> Result<String, String> {
        let field = |name: &str| body[name].as_str().unwrap_or("").to_string();
        let csr = CertificateSigningRequestDer::from_pem_slice(field("csr").as_bytes())
            .map_err(|e| format!("csr: {e}"))?;
        let key = CsrKey::of(&csr)?;
        let mut sans: Vec<String> = Vec::new();
        for name in ["alt_names", "uri_sans", "ip_sans"] {
            sans.extend(
                field(name)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
        let ttl = field("ttl")
            .trim_end_matches('s')
            .parse()
            .map_or(Duration::from_secs(90), Duration::from_secs);
        let now = SystemTime::now();
        let names: Vec<&str> = sans.iter().map(String::as_str).collect();
        let mut leaf = Leaf::new(&field("common_name"), &names, Usage::Server, 1);
        leaf.not_before = now - Duration::from_secs(30);
        leaf.not_after = now + ttl;
        let answer = *self.answer.lock().unwrap();
        let signed = match answer {
            Answer::Good => self.issuer.sign(&leaf, &key),
            Answer::OtherKey => self.issuer.issue(&leaf).map(|pem| pem.cert),
            Answer::OtherNames => {
                leaf.sans = vec!["evil.example".into()];
                self.issuer.sign(&leaf, &key)
            }
            Answer::Expired => {
                leaf.not_before = now - Duration::from_secs(7200);
                leaf.not_after = now - Duration::from_secs(3600);
                self.issuer.sign(&leaf, &key)
            }
            Answer::Untrusted => self.stranger.sign(&leaf, &key),
            Answer::ShortLived => {
                leaf.not_after = now + Duration::from_secs(20);
                self.issuer.sign(&leaf, &key)
            }
        };
        signed.map_err(|e| e.to_string())
    }
}

/// The public key of a CSR, for rcgen to sign.
struct CsrKey {
    raw: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
}

impl CsrKey {
    fn of(csr: &CertificateSigningRequestDer<'_>) -> Result<CsrKey, String> {
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(csr.as_ref())
                .map_err(|e| format!("csr: {e}"))?;
        let spki = &csr.certification_request_info.subject_pki;
        let algorithm = match vitals::x509::key_type(spki.raw) {
            Some(KeyType::P256) => &rcgen::PKCS_ECDSA_P256_SHA256,
            Some(KeyType::P384) => &rcgen::PKCS_ECDSA_P384_SHA384,
            Some(KeyType::Ed25519) => &rcgen::PKCS_ED25519,
            None => return Err("csr: a key type this pki does not sign".into()),
        };
        Ok(CsrKey {
            raw: spki.subject_public_key.data.to_vec(),
            algorithm,
        })
    }
}

impl rcgen::PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}
