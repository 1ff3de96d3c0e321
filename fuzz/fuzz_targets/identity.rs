//! The peer identity and expiry of a certificate, on arbitrary bytes: never panics, and an
//! identity, when there is one, is a non-empty string, the same every time.
//!
//! x509-parser reads them (`src/x509.rs`), and the identity rule on top is ours. In the
//! daemon these run on certificates rustls has already verified, but `identity` also runs in
//! `vitalsctl` and the tests, and a parser that panics on a crafted certificate should be
//! found here, not on a device.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    let cert = CertificateDer::from(data);
    let identity = vitals::tls::identity(&cert);
    if let Some(id) = &identity {
        assert!(!id.is_empty(), "an empty identity");
    }
    assert_eq!(
        vitals::tls::identity(&cert),
        identity,
        "identity is not deterministic"
    );
    let _ = vitals::tls::not_after(&cert);
    // What the daemon reads of a certificate the pki issued (an answer from outside).
    let _ = (
        vitals::x509::names(data),
        vitals::x509::public_key(data).map(|spki| vitals::x509::key_type(&spki)),
        vitals::x509::self_issued(data),
    );
});
