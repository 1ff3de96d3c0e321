//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/seed-*`.
//!
//! ```sh
//! cargo +nightly run --manifest-path fuzz/Cargo.toml --features seed --bin seed
//! ```
//!
//! Then `cargo +nightly fuzz cmin <target>` keeps only the inputs that add coverage. The
//! certificates are fresh every run (new keys), so re-seeding changes the files; the
//! committed corpus is what a run starts from, this program is how it was made.

use std::{
    fs,
    path::{Path, PathBuf},
};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, OtherNameValue, SanType,
    string::{BmpString, TeletexString},
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use vitals::pki::{Authority, Leaf, Usage};
use vitals_fuzz::{JWT_AUDIENCE, JWT_ISSUER, OPAQUE_TOKEN, b64url, hs256_jwt, now};

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    config(
        &fuzz.join("corpus/config_parse"),
        &fuzz.join("../config/vitalsd.toml"),
    );
    identity(&fuzz.join("corpus/identity"));
    auth(&fuzz.join("corpus/auth_bearer"));
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    let path: PathBuf = dir.join(format!("seed-{name}"));
    fs::write(&path, bytes).unwrap();
}

/// The reference config, the drop-ins the integration tests use, and broken TOML.
fn config(dir: &Path, reference: &Path) {
    let full = fs::read_to_string(reference).unwrap();
    write(dir, "reference.toml", full.as_bytes());
    let snippets: &[(&str, &str)] = &[
        ("empty", ""),
        (
            "test-base",
            "[server]\nlisten = [\"127.0.0.1:0\"]\ndrain_timeout = \"10s\"\n\n[tls]\ncert = \"/tmp/pki/server.crt\"\nkey = \"/tmp/pki/server.key\"\nclient_ca = \"/tmp/pki/ca.crt\"\n\n[metrics]\nsample_interval = \"1s\"\n\n[[auth.rules]]\nidentities = [\"spiffe://test.vitals/client\"]\nmethods = [\"*\"]\n\n[log]\nformat = \"json\"\nlevel = \"info\"\naccess = true\n",
        ),
        ("unknown-key", "[server]\nlisten_address = \"0.0.0.0:1\"\n"),
        (
            "bad-duration",
            "[server]\nlisten = [\"127.0.0.1:9\"]\nmax_connection_idle = \"soon\"\n",
        ),
        ("max-connections", "[server]\nmax_connections = 77\n"),
        (
            "negative",
            "[server]\nmax_message_size = \"1MiB\"\nmax_connections = -3\n",
        ),
        ("idle", "[server]\nmax_connection_idle = \"1s\"\n"),
        (
            "age",
            "[server]\nmax_connection_age = \"500ms\"\nmax_connection_age_grace = \"500ms\"\n",
        ),
        ("handshake", "[server]\nhandshake_timeout = \"500ms\"\n"),
        ("deadline", "[server]\nmax_deadline = \"300ms\"\n"),
        ("message-size", "[server]\nmax_message_size = \"64KiB\"\n"),
        ("bad-listen", "[server]\nlisten = [\"not an address\"]\n"),
        ("disk", "[health]\nmin_disk_free_percent = 99.9\n"),
        (
            "plaintext",
            "[health]\nplaintext_listen = [\"127.0.0.1:0\"]\n",
        ),
        (
            "temperature",
            "[health]\nmax_temperature_celsius = 85.5\ndisk_paths = [\"/\", \"/data\"]\n",
        ),
        ("echo-panic", "[echo]\nallow_panic = true\n"),
        (
            "journald",
            "[server]\nlisten = [\"127.0.0.1:50051\"]\n[log]\nformat = \"journald\"\naccess = true\nlevel = \"info,vitals=debug\"\n[health]\nmin_disk_free_percent = 99.9\n[auth]\naudit = [\"vitals.echo.v1.Echo/*\"]\n",
        ),
        (
            "rules",
            "[auth]\npublic = [\"grpc.health.v1.Health/*\"]\n[[auth.rules]]\nidentities = [\"spiffe://test.vitals/prob*\"]\nmethods = [\"vitals.metrics.v1.Metrics/*\"]\n[[auth.rules]]\nidentities = [\"prober.fleet.test\", \"just-a-cn\"]\nmethods = [\"vitals.echo.v1.Echo/Echo\"]\n",
        ),
        (
            "unknown-method",
            "[[auth.rules]]\nidentities = [\"*\"]\nmethods = [\"vitals.echo.v1.Echo/Shout\"]\n",
        ),
        (
            "bearer-opaque",
            "[[secrets.sources]]\nkind = \"file\"\ndir = \"/run/secrets\"\n[[auth.bearer]]\nmethods = [\"vitals.metrics.v1.Metrics/*\"]\nkind = \"opaque\"\ntokens = [\"secret:metrics-token\"]\n",
        ),
        (
            "bearer-jwt",
            "[[secrets.sources]]\nkind = \"file\"\ndir = \"/run/secrets\"\n[[auth.bearer]]\nmethods = [\"vitals.echo.v1.Echo/*\"]\nkind = \"jwt\"\nalgorithm = \"ES256\"\nkey = \"secret:jwt-key\"\nissuer = \"https://issuer.test\"\naudience = \"vitalsd\"\nleeway = \"5s\"\n",
        ),
        (
            "vault-token",
            "[secrets]\nstartup_timeout = \"20s\"\n[tls]\nkey = \"secret:tls_key\"\n[[secrets.sources]]\nkind = \"file\"\ndir = \"/run/secrets\"\n[[secrets.sources]]\nkind = \"vault\"\naddr = \"https://127.0.0.1:8200\"\nca_cert = \"/etc/vitalsd/bao-ca.crt\"\npath = \"devices/gw\"\ntoken = \"secret:vault-token\"\nfields = { tls_key = \"key\" }\n",
        ),
        (
            "vault-approle",
            "[tls]\nkey = \"secret:server.key\"\n[[secrets.sources]]\nkind = \"credentials\"\n[[secrets.sources]]\nkind = \"vault\"\naddr = \"https://bao.example:8200/\"\nca_cert = \"/etc/ca.crt\"\npath = \"/devices/gw/\"\nnamespace = \"fleet\"\nauth = \"approle\"\nauth_mount = \"approle\"\nrole_id = \"secret:role-id\"\nsecret_id = \"secret:secret-id\"\ntimeout = \"2s\"\nfields = { \"server.key\" = \"key\" }\n",
        ),
        (
            "vault-cert",
            "[tls]\nkey = \"secret:tls_key\"\n[[secrets.sources]]\nkind = \"credentials\"\n[[secrets.sources]]\nkind = \"vault\"\naddr = \"https://127.0.0.1:8200\"\nca_cert = \"/etc/ca.crt\"\npath = \"devices/gw\"\nauth = \"cert\"\ncert_role = \"device\"\nclient_cert = \"/etc/vitalsd/device.crt\"\nclient_key = \"/etc/vitalsd/device.key\"\nfields = { tls_key = \"key\" }\n",
        ),
        ("tls-secret-no-source", "[tls]\nkey = \"secret:absent\"\n"),
        ("bad-toml-unclosed", "[server\nlisten = [\"127.0.0.1:1\"]\n"),
        ("bad-toml-string", "[server]\nhandshake_timeout = \"5s\n"),
        (
            "bad-toml-dup",
            "[server]\nmax_connections = 1\nmax_connections = 2\n",
        ),
        ("bad-toml-value", "[log]\nlevel = info\n"),
        ("bad-toml-array", "[[server]]\nlisten = 1\n"),
        (
            "wrong-type",
            "[server]\nlisten = \"127.0.0.1:1\"\nmax_connections = \"many\"\n",
        ),
        (
            "inline-tables",
            "server = { listen = [\"[::1]:50051\"], worker_threads = 2 }\nlog = { format = \"text\" }\n",
        ),
        (
            "dotted-keys",
            "server.max_concurrent_streams = 10\nmetrics.sample_interval = \"2m\"\n",
        ),
        ("datetime", "[log]\nlevel = 1979-05-27T07:32:00Z\n"),
    ];
    for (name, text) in snippets {
        write(dir, &format!("{name}.toml"), text.as_bytes());
    }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Certificates naming their holder every way `identity` looks at, then broken ones.
fn identity(dir: &Path) {
    let ca = Authority::new("vitals fuzz CA").unwrap();
    write(dir, "ca.der", &der(&ca.cert_pem()));
    let leaves: &[(&str, &str, &[&str])] = &[
        (
            "uri-san",
            "the-cn",
            &["dev.example", "spiffe://fleet/prober"],
        ),
        ("dns-san", "the-cn", &["prober.fleet.test"]),
        ("ip-san", "just-a-cn", &["10.0.0.1", "::1"]),
        ("cn-only", "just-a-cn", &[]),
        ("empty-cn", "", &[]),
    ];
    for (name, cn, sans) in leaves {
        let pem = ca.issue(&Leaf::new(cn, sans, Usage::Client, 1)).unwrap();
        write(dir, &format!("{name}.der"), &der(&pem.cert));
    }
    // What vitals::pki cannot make: no subject at all, odd string types, other SAN kinds.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    write(
        dir,
        "empty-subject.der",
        params.self_signed(&key).unwrap().der(),
    );

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "fleet");
    dn.push(
        DnType::CommonName,
        DnValue::BmpString(BmpString::try_from("bmp-cn").unwrap()),
    );
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::Rfc822Name("ops@fleet.test".try_into().unwrap()),
        SanType::OtherName((
            vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
            OtherNameValue::Utf8String("upn@fleet".into()),
        )),
    ];
    write(
        dir,
        "bmp-cn-other-sans.der",
        params.self_signed(&key).unwrap().der(),
    );

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        DnValue::TeletexString(TeletexString::try_from("teletex-cn").unwrap()),
    );
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI("".try_into().unwrap())];
    write(
        dir,
        "teletex-cn-empty-uri.der",
        params.self_signed(&key).unwrap().der(),
    );

    // Broken: truncated at a few places, and single bits flipped in the header, the names
    // and the signature.
    let good = der(&ca
        .issue(&Leaf::new(
            "the-cn",
            &["spiffe://fleet/prober"],
            Usage::Client,
            1,
        ))
        .unwrap()
        .cert);
    for cut in [1, 4, good.len() / 3, good.len() / 2, good.len() - 1] {
        write(dir, &format!("truncated-{cut}.der"), &good[..cut]);
    }
    for at in [1, 5, good.len() / 2, good.len() - 10] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x10;
        write(dir, &format!("flipped-{at}.der"), &flipped);
    }
}

/// Headers for the auth target: selector byte, then the header value.
fn auth(dir: &Path) {
    let input = |selector: u8, header: &[u8]| [&[selector][..], header].concat();
    let now = now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = |exp: u64, nbf: u64, iss: &str, aud: &str| {
        format!(r#"{{"exp":{exp},"nbf":{nbf},"iss":"{iss}","aud":{aud}}}"#)
    };
    let aud = format!(r#"["x","{JWT_AUDIENCE}"]"#);
    let good = hs256_jwt(header, &claims(now + 3600, now - 60, JWT_ISSUER, &aud));
    let jwts = [
        ("jwt-good", good.clone()),
        (
            "jwt-expired",
            hs256_jwt(header, &claims(now - 120, now - 600, JWT_ISSUER, &aud)),
        ),
        (
            "jwt-wrong-iss",
            hs256_jwt(header, &claims(now + 60, now - 60, "other", &aud)),
        ),
        (
            "jwt-no-exp",
            hs256_jwt(
                header,
                &format!(r#"{{"iss":"{JWT_ISSUER}","aud":"{JWT_AUDIENCE}"}}"#),
            ),
        ),
        (
            "jwt-alg-none",
            format!(
                "{}.{}.",
                b64url(br#"{"alg":"none"}"#),
                b64url(claims(now + 60, 0, JWT_ISSUER, &aud).as_bytes())
            ),
        ),
        (
            "jwt-es256",
            format!(
                "{}.{}.{}",
                b64url(br#"{"alg":"ES256"}"#),
                b64url(claims(now + 60, 0, JWT_ISSUER, &aud).as_bytes()),
                b64url(&[7u8; 64])
            ),
        ),
    ];
    for (name, jwt) in &jwts {
        write(dir, name, &input(1, format!("Bearer {jwt}").as_bytes()));
    }
    write(
        dir,
        "jwt-lowercase",
        &input(1, format!("bearer {good}").as_bytes()),
    );
    write(
        dir,
        "opaque-good",
        &input(0, &[b"Bearer ", OPAQUE_TOKEN].concat()),
    );
    write(dir, "opaque-wrong", &input(0, b"Bearer token-three"));
    write(dir, "basic", &input(0, b"Basic dG9rZW4="));
    write(dir, "empty-bearer", &input(0, b"Bearer "));
    write(dir, "no-header", &input(0x80, b""));
    write(dir, "public", &input(2, b"Bearer whatever"));
}
