//! Pulled secrets against a real OpenBao (KV v2 over TLS), systemd-style credentials and
//! secret files. Every test ends by scanning all the daemon printed for every secret value
//! it used.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::net::TcpListener;
use vitals::proto::echo::EchoRequest;

use crate::support::{
    TestDaemon, TestPki,
    bao::{Bao, secret_file},
    run_vitalsd, write_config,
};

/// The TOML of a vault source reading `secret/devices/gw` with token auth.
fn vault_token_source(bao_addr: &str, ca: &Path, fields: &str) -> String {
    format!(
        "[[secrets.sources]]\nkind = \"vault\"\naddr = \"{bao_addr}\"\nca_cert = \"{}\"\npath = \"devices/gw\"\ntoken = \"secret:vault-token\"\nfields = {fields}\n",
        ca.display()
    )
}

/// A directory of secret files holding the dev server's root token as `vault-token`, the
/// name [`vault_token_source`] reads it by.
fn root_token_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "vault-token", crate::support::bao::ROOT_TOKEN);
    dir
}

fn file_source(dir: &Path) -> String {
    format!(
        "[[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n",
        dir.display()
    )
}

/// Asserts that no line the daemon printed contains any of `values` (for PEM, any line of
/// its body).
fn assert_clean(output: &[String], values: &[&str]) {
    let needles: Vec<&str> = values
        .iter()
        .flat_map(|v| v.lines())
        .map(str::trim)
        .filter(|l| l.len() >= 8 && !l.starts_with("-----"))
        .collect();
    assert!(!needles.is_empty());
    for line in output {
        for needle in &needles {
            assert!(!line.contains(needle), "a secret value was printed: {line}");
        }
    }
}

/// A policy-limited token (from a secret file) reads the TLS key from the store, and the
/// daemon serves mutual TLS with it; the key file is not on disk at all.
#[tokio::test]
async fn token_auth_pulls_the_tls_key() {
    let bao = Bao::start();
    let pki = Arc::new(TestPki::new());
    let key = store_tls_key(&bao, &pki);
    std::fs::remove_file(pki.path("server.key")).unwrap();
    bao.read_policy("gw", "devices/gw");
    let token = bao.token("gw");
    let secrets = tempfile::tempdir().unwrap();
    secret_file(secrets.path(), "vault-token", &format!("{token}\n"));
    let dropin = format!(
        "[tls]\nkey = \"secret:tls_key\"\n{}{}",
        file_source(secrets.path()),
        vault_token_source(&bao.addr(), &bao.ca(), "{ tls_key = \"tls_key\" }")
    );
    let daemon = TestDaemon::builder().pki(pki).dropin(&dropin).start().await;
    let reply = daemon
        .echo()
        .await
        .echo(EchoRequest {
            echo_message: "pulled".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(reply.unwrap().into_inner().echo_message, "pulled");
    assert!(
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("pulled secrets") && l.contains("tls_key"))
    );
    assert_clean(&daemon.logs(), &[&token, &key]);
}

/// AppRole credentials from $CREDENTIALS_DIRECTORY log in; the login token is revoked
/// right after the read.
#[tokio::test]
async fn approle_from_credentials_directory() {
    let bao = Bao::start();
    let pki = Arc::new(TestPki::new());
    let key = std::fs::read_to_string(pki.path("server.key")).unwrap();
    bao.run(&[
        "kv",
        "put",
        "secret/devices/gw",
        &format!("server_key={key}"),
    ]);
    bao.read_policy("gw", "devices/gw");
    let (role_id, secret_id) = bao.approle("gw", "gw", &["token_ttl=10m"]);
    let credentials = tempfile::tempdir().unwrap();
    secret_file(credentials.path(), "vault-role-id", &role_id);
    secret_file(credentials.path(), "vault-secret-id", &secret_id);
    let tokens_before = bao.run(&["list", "-format=json", "auth/token/accessors"]);

    let dropin = format!(
        "[tls]\nkey = \"secret:server.key\"\n[[secrets.sources]]\nkind = \"credentials\"\n\
         [[secrets.sources]]\nkind = \"vault\"\naddr = \"{}\"\nca_cert = \"{}\"\npath = \"devices/gw\"\n\
         auth = \"approle\"\nrole_id = \"secret:vault-role-id\"\nsecret_id = \"secret:vault-secret-id\"\n\
         fields = {{ \"server.key\" = \"server_key\" }}\n",
        bao.addr(),
        bao.ca().display()
    );
    let daemon = TestDaemon::builder()
        .pki(pki)
        .dropin(&dropin)
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .start()
        .await;
    daemon.echo_ok().await;
    let tokens_after = bao.run(&["list", "-format=json", "auth/token/accessors"]);
    assert_eq!(tokens_before, tokens_after, "the login token was revoked");
    assert_clean(&daemon.logs(), &[&role_id, &secret_id, &key]);
}

/// Cert auth logs in with the device's own client certificate and pulls the serving key.
#[tokio::test]
async fn cert_auth_with_the_device_certificate() {
    let bao = Bao::start();
    let pki = Arc::new(TestPki::new());
    let key = store_tls_key(&bao, &pki);
    bao.read_policy("gw", "devices/gw");
    bao.run(&["auth", "enable", "cert"]);
    let ca = format!("certificate=@{}", pki.path("ca.crt").display());
    bao.run(&["write", "auth/cert/certs/device", "token_policies=gw", &ca]);
    let dropin = format!(
        "[tls]\nkey = \"secret:tls_key\"\n[[secrets.sources]]\nkind = \"vault\"\naddr = \"{}\"\nca_cert = \"{}\"\n\
         path = \"devices/gw\"\nauth = \"cert\"\ncert_role = \"device\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\
         fields = {{ tls_key = \"tls_key\" }}\n",
        bao.addr(),
        bao.ca().display(),
        pki.path("client.crt").display(),
        pki.path("client.key").display()
    );
    let daemon = TestDaemon::builder().pki(pki).dropin(&dropin).start().await;
    daemon.echo_ok().await;
    assert_clean(&daemon.logs(), &[&key]);
}

/// Runs vitalsd on `dropin` to completion and asserts it exits 69 (EX_UNAVAILABLE) saying
/// each of `said`; returns what it printed and how long it took.
fn exits_unavailable(pki: &TestPki, dropin: &str, said: &[&str]) -> (String, Duration) {
    let dir = write_config(pki, dropin);
    let config = dir.path().join("vitalsd.toml");
    let started = Instant::now();
    let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    let took = started.elapsed();
    assert_eq!(code, Some(69), "{out}");
    for needle in said {
        assert!(out.contains(needle), "no `{needle}` in: {out}");
    }
    (out, took)
}

/// Puts the PKI's server key into the store as `secret/devices/gw` field `tls_key`; returns it.
fn store_tls_key(bao: &Bao, pki: &TestPki) -> String {
    let key = std::fs::read_to_string(pki.path("server.key")).unwrap();
    bao.run(&["kv", "put", "secret/devices/gw", &format!("tls_key={key}")]);
    key
}

/// A store whose certificate is not from the configured CA fails at once and clearly.
#[tokio::test]
async fn wrong_ca_for_the_store_fails_clearly() {
    let bao = Bao::start();
    let pki = TestPki::new();
    let secrets = tempfile::tempdir().unwrap();
    secret_file(secrets.path(), "vault-token", "anything");
    let dropin = format!(
        "[tls]\nkey = \"secret:tls_key\"\n{}{}",
        file_source(secrets.path()),
        vault_token_source(
            &bao.addr(),
            &pki.path("ca.crt"),
            "{ tls_key = \"tls_key\" }"
        )
    );
    let (_, took) = exits_unavailable(
        &pki,
        &dropin,
        &["secret `tls_key` from vault", "not trusted by ca_cert"],
    );
    assert!(
        took < Duration::from_secs(5),
        "no retries for a certificate problem: {took:?}"
    );
}

/// A store that is down is retried with backoff until the startup deadline, then startup
/// fails with exit 69 naming the source, the secret and the reason; nothing was bound.
#[tokio::test]
async fn store_down_at_startup_exits_69() {
    let pki = TestPki::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secrets = tempfile::tempdir().unwrap();
    secret_file(secrets.path(), "vault-token", "anything");
    let dropin = format!(
        "[secrets]\nstartup_timeout = \"3s\"\n[tls]\nkey = \"secret:tls_key\"\n{}{}",
        file_source(secrets.path()),
        vault_token_source(
            &format!("https://127.0.0.1:{port}"),
            &pki.path("ca.crt"),
            "{ tls_key = \"k\" }"
        )
    );
    let (out, took) = exits_unavailable(
        &pki,
        &dropin,
        &["secret `tls_key` from vault https://127.0.0.1:"],
    );
    assert!(
        out.contains("gave up after") && out.contains("Connection refused"),
        "{out}"
    );
    assert!(
        out.matches("waiting for secrets").count() >= 2,
        "retried: {out}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert!(!out.contains("\"serving\""), "{out}");
}

/// A store that becomes reachable a few seconds after the daemon starts is waited for
/// within the deadline, then the daemon serves.
#[tokio::test]
async fn store_coming_up_late_is_waited_for() {
    let bao = Bao::start();
    let pki = Arc::new(TestPki::new());
    let key = store_tls_key(&bao, &pki);
    let secrets = root_token_files();
    // The daemon dials a port where nothing listens yet; after 2 s a forwarder to the
    // store opens there, as when the network or the store comes up late.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = format!("127.0.0.1:{}", bao.port);
    let forwarder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let dropin = format!(
        "[secrets]\nstartup_timeout = \"20s\"\n[tls]\nkey = \"secret:tls_key\"\n{}{}",
        file_source(secrets.path()),
        vault_token_source(
            &format!("https://localhost:{port}"),
            &bao.ca(),
            "{ tls_key = \"tls_key\" }"
        )
    );
    let started = Instant::now();
    let daemon = TestDaemon::builder().pki(pki).dropin(&dropin).start().await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    daemon.echo_ok().await;
    assert!(
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("waiting for secrets"))
    );
    assert_clean(&daemon.logs(), &[crate::support::bao::ROOT_TOKEN, &key]);
    forwarder.abort();
}

/// A wrong token is a permanent failure: one request, no retry storm, exit 69.
#[tokio::test]
async fn wrong_token_fails_at_once() {
    let bao = Bao::start();
    let pki = TestPki::new();
    bao.run(&["kv", "put", "secret/devices/gw", "tls_key=x"]);
    let secrets = tempfile::tempdir().unwrap();
    secret_file(secrets.path(), "vault-token", "s.not-a-real-token-123456");
    let dropin = format!(
        "[tls]\nkey = \"secret:tls_key\"\n{}{}",
        file_source(secrets.path()),
        vault_token_source(&bao.addr(), &bao.ca(), "{ tls_key = \"tls_key\" }")
    );
    let (out, took) = exits_unavailable(&pki, &dropin, &["permission denied"]);
    assert!(!out.contains("waiting for secrets"), "no retries: {out}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_clean(
        &out.lines().map(String::from).collect::<Vec<_>>(),
        &["s.not-a-real-token-123456"],
    );
}

/// A path that does not exist, and a field that is not in the entry, stop startup at once
/// with what is missing.
#[tokio::test]
async fn missing_path_or_field_fails_clearly() {
    let bao = Bao::start();
    let pki = TestPki::new();
    bao.run(&["kv", "put", "secret/devices/gw", "other=1"]);
    let secrets = root_token_files();
    let field = format!(
        "[tls]\nkey = \"secret:tls_key\"\n{}{}",
        file_source(secrets.path()),
        vault_token_source(&bao.addr(), &bao.ca(), "{ tls_key = \"tls_key\" }")
    );
    exits_unavailable(
        &pki,
        &field,
        &["field `tls_key` is not in secret/devices/gw"],
    );
    let path = field.replace("devices/gw", "devices/none");
    exits_unavailable(&pki, &path, &["no secret at /v1/secret/data/devices/none"]);
}

/// A secret file readable by others is refused, exit 78 (what was provisioned is wrong:
/// the unit does not restart into the same refusal); a missing one is named with the
/// sources tried, exit 69 (it may yet come).
#[tokio::test]
async fn local_secret_problems_are_named() {
    let pki = TestPki::new();
    let secrets = tempfile::tempdir().unwrap();
    vitals::pki::write_file(&secrets.path().join("tls_key"), "x", 0o644).unwrap();
    let dropin = format!(
        "[tls]\nkey = \"secret:tls_key\"\n{}",
        file_source(secrets.path())
    );
    let dir = write_config(&pki, &dropin);
    let config = dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("chmod 600"), "{out}");
    let dropin = format!(
        "[tls]\nkey = \"secret:absent\"\n{}",
        file_source(secrets.path())
    );
    exits_unavailable(
        &pki,
        &dropin,
        &["secret `absent`: no source has it (tried files in"],
    );
}

/// When the store is gone after startup the daemon keeps serving, and a reload that cannot
/// re-pull keeps the secrets it has and says why.
#[tokio::test]
async fn reload_without_the_store_keeps_the_old_secrets() {
    let bao = Bao::start();
    let pki = Arc::new(TestPki::new());
    let key = store_tls_key(&bao, &pki);
    let secrets = root_token_files();
    let dropin = format!(
        "[secrets]\nstartup_timeout = \"2s\"\n[tls]\nkey = \"secret:tls_key\"\n{}{}",
        file_source(secrets.path()),
        vault_token_source(&bao.addr(), &bao.ca(), "{ tls_key = \"tls_key\" }")
    );
    let daemon = TestDaemon::builder().pki(pki).dropin(&dropin).start().await;
    drop(bao);
    daemon.echo_ok().await;
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| l.contains("reload rejected") && l.contains("secret `tls_key`"))
        .await;
    daemon
        .echo()
        .await
        .echo(EchoRequest::default())
        .await
        .expect("still serving on the old key");
    assert_clean(&daemon.logs(), &[crate::support::bao::ROOT_TOKEN, &key]);
}

/// `--check-config` lists each referenced secret and the source it would come from, never
/// a value.
#[tokio::test]
async fn check_config_shows_sources_not_values() {
    let pki = TestPki::new();
    let secrets = tempfile::tempdir().unwrap();
    secret_file(secrets.path(), "tls_key", "VERY-SECRET-VALUE-1234");
    let dropin = format!(
        "[tls]\nkey = \"secret:tls_key\"\n{}{}",
        file_source(secrets.path()),
        vault_token_source(
            "https://vault.invalid:8200",
            &pki.path("ca.crt"),
            "{ other = \"f\" }"
        )
    );
    let dir = write_config(&pki, &dropin);
    let config = dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(
        &["--config", config.to_str().unwrap(), "--check-config"],
        &[],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "#   tls_key: files in {}",
            secrets.path().display()
        )),
        "{out}"
    );
    assert!(out.contains("#   vault-token: not found"), "{out}");
    assert!(!out.contains("VERY-SECRET-VALUE"), "{out}");
}

/// An echo carrying `authorization: Bearer TOKEN`, on a new connection.
async fn echo_with_bearer(daemon: &TestDaemon, token: &str) -> Result<(), String> {
    let mut request = tonic::Request::new(EchoRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    daemon
        .echo()
        .await
        .echo(request)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A bearer token for echo, from the store's `devices/gw` field `echo_token`.
const BEARER_ON_ECHO: &str = "[[auth.bearer]]\nmethods = [\"vitals.echo.v1.Echo/*\"]\nkind = \"opaque\"\ntokens = [\"secret:echo-token\"]\n";

/// A policy that reads `secret/devices/gw`, its data and, when `metadata`, its metadata.
fn gw_policy(bao: &Bao, metadata: bool) {
    let mut policy = "path \"secret/data/devices/gw\" { capabilities = [\"read\"] }\n".to_string();
    if metadata {
        policy.push_str("path \"secret/metadata/devices/gw\" { capabilities = [\"read\"] }\n");
    }
    let file = bao.dir.path().join("gw.hcl");
    std::fs::write(&file, policy).unwrap();
    bao.run(&["policy", "write", "gw", file.to_str().unwrap()]);
}

/// A value changed in the store reaches the daemon within its refresh interval, without
/// SIGHUP: the new bearer token is accepted and the old one refused. Each refresh logs in
/// with AppRole and revokes its token. An empty value in the store is refused and the one
/// in use stays.
#[tokio::test]
async fn kv_change_reaches_the_daemon_within_its_refresh_interval() {
    let bao = Bao::start();
    let (old, new) = ("echo-token-old-5c2e81d7", "echo-token-new-9a41f0b3");
    bao.run(&[
        "kv",
        "put",
        "secret/devices/gw",
        &format!("echo_token={old}"),
    ]);
    gw_policy(&bao, true);
    let (role_id, secret_id) = bao.approle("gw", "gw", &["token_ttl=10m"]);
    let secrets = tempfile::tempdir().unwrap();
    secret_file(secrets.path(), "vault-role-id", &role_id);
    secret_file(secrets.path(), "vault-secret-id", &secret_id);
    let tokens_before = bao.run(&["list", "-format=json", "auth/token/accessors"]);
    let dropin = format!(
        "{}[[secrets.sources]]\nkind = \"vault\"\naddr = \"{}\"\nca_cert = \"{}\"\npath = \"devices/gw\"\n\
         auth = \"approle\"\nrole_id = \"secret:vault-role-id\"\nsecret_id = \"secret:vault-secret-id\"\n\
         refresh_interval = \"1s\"\nfields = {{ echo-token = \"echo_token\" }}\n{BEARER_ON_ECHO}",
        file_source(secrets.path()),
        bao.addr(),
        bao.ca().display()
    );
    let daemon = TestDaemon::builder().dropin(&dropin).start().await;
    echo_with_bearer(&daemon, old).await.unwrap();
    assert!(echo_with_bearer(&daemon, new).await.is_err());

    bao.run(&[
        "kv",
        "put",
        "secret/devices/gw",
        &format!("echo_token={new}"),
    ]);
    let changed = Instant::now();
    crate::support::eventually(Duration::from_secs(10), || echo_with_bearer(&daemon, new)).await;
    let took = changed.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "one interval and a pull: {took:?}"
    );
    assert!(
        echo_with_bearer(&daemon, old).await.is_err(),
        "the old token is gone"
    );
    daemon
        .wait_for_log(|l| l.contains("applied refreshed secrets") && l.contains("echo-token"))
        .await;
    assert!(
        !daemon
            .logs()
            .iter()
            .any(|l| l.contains("reloaded the config"))
    );

    // An empty value is not a token: refused, the one in use stays.
    bao.run(&["kv", "put", "secret/devices/gw", "echo_token="]);
    daemon
        .wait_for_log(|l| l.contains("refreshing secrets failed") && l.contains("is empty"))
        .await;
    echo_with_bearer(&daemon, new)
        .await
        .expect("still the token in use");
    // Each refresh's login token was revoked (the daemon is still refreshing: wait for a
    // quiet moment between two by listing twice).
    crate::support::eventually(Duration::from_secs(10), || async {
        let after = bao.run(&["list", "-format=json", "auth/token/accessors"]);
        (after == tokens_before)
            .then_some(())
            .ok_or_else(|| format!("login tokens left: {after}"))
    })
    .await;
    assert_clean(&daemon.logs(), &[old, new, &role_id, &secret_id]);
}

/// The remaining TTL of `token`, as the store reports it.
fn token_ttl(bao: &Bao, token: &str) -> Option<u64> {
    let out = bao.cli(&["token", "lookup", "-format=json", token]);
    if !out.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["data"]["ttl"].as_u64()
}

/// The operator's token with a short TTL is renewed before it ends: the store reports it
/// alive past its first TTL, and a reload that needs it still works then.
#[tokio::test]
async fn a_short_lived_token_is_renewed() {
    let bao = Bao::start();
    let pki = Arc::new(TestPki::new());
    let key = store_tls_key(&bao, &pki);
    bao.read_policy("gw", "devices/gw");
    let created = Instant::now();
    let token = bao.run(&["token", "create", "-field=token", "-policy=gw", "-ttl=6s"]);
    let secrets = tempfile::tempdir().unwrap();
    secret_file(secrets.path(), "vault-token", &token);
    let dropin = format!(
        "[tls]\nkey = \"secret:tls_key\"\n{}{}",
        file_source(secrets.path()),
        vault_token_source(&bao.addr(), &bao.ca(), "{ tls_key = \"tls_key\" }")
    );
    let daemon = TestDaemon::builder().pki(pki).dropin(&dropin).start().await;
    daemon
        .wait_for_log(|l| l.contains("renewed the Vault token"))
        .await;
    // Past the TTL it was created with.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(created.elapsed())).await;
    let ttl = token_ttl(&bao, &token).expect("the token is alive past its first TTL");
    assert!(ttl > 0, "{ttl}");
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| l.contains("reloaded the config"))
        .await;
    daemon.echo_ok().await;
    assert_clean(&daemon.logs(), &[&token, &key]);
}

/// A token that cannot be renewed is logged once, with the time it has left. A token that
/// may not read the entry's metadata makes each refresh read the entry (said once), and a
/// change still arrives.
#[tokio::test]
async fn unrenewable_token_and_no_metadata_are_said_once() {
    let bao = Bao::start();
    let (old, new) = ("echo-token-old-77b1d2e4", "echo-token-new-0c9e3a56");
    bao.run(&[
        "kv",
        "put",
        "secret/devices/gw",
        &format!("echo_token={old}"),
    ]);
    gw_policy(&bao, false);
    let token = bao.run(&[
        "token",
        "create",
        "-field=token",
        "-policy=gw",
        "-ttl=1h",
        "-renewable=false",
    ]);
    let secrets = tempfile::tempdir().unwrap();
    secret_file(secrets.path(), "vault-token", &token);
    let dropin = format!(
        "{}{}refresh_interval = \"1s\"\n{BEARER_ON_ECHO}",
        file_source(secrets.path()),
        vault_token_source(&bao.addr(), &bao.ca(), "{ echo-token = \"echo_token\" }")
    );
    let daemon = TestDaemon::builder().dropin(&dropin).start().await;
    daemon
        .wait_for_log(|l| {
            l.contains("the Vault token is not renewable") && l.contains("expires_in_s")
        })
        .await;
    bao.run(&[
        "kv",
        "put",
        "secret/devices/gw",
        &format!("echo_token={new}"),
    ]);
    crate::support::eventually(Duration::from_secs(10), || echo_with_bearer(&daemon, new)).await;
    // A few more refreshes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logs = daemon.logs();
    let count = |needle: &str| logs.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("the Vault token is not renewable"), 1, "{logs:#?}");
    assert_eq!(count("may not read this entry's metadata"), 1, "{logs:#?}");
    assert_eq!(
        count("applied refreshed secrets"),
        1,
        "only a change is applied"
    );
    assert_clean(&logs, &[old, new, &token]);
}

/// A token renewed up to its max TTL is said once, with the time it has left, and not
/// renewed again.
#[tokio::test]
async fn a_token_at_its_max_ttl_is_said_once() {
    let bao = Bao::start();
    bao.run(&[
        "kv",
        "put",
        "secret/devices/gw",
        "echo_token=echo-token-2b8d4c61",
    ]);
    bao.read_policy("gw", "devices/gw");
    let token = bao.run(&[
        "token",
        "create",
        "-field=token",
        "-policy=gw",
        "-ttl=4s",
        "-explicit-max-ttl=9s",
    ]);
    let secrets = tempfile::tempdir().unwrap();
    secret_file(secrets.path(), "vault-token", &token);
    let dropin = format!(
        "{}{}{BEARER_ON_ECHO}",
        file_source(secrets.path()),
        vault_token_source(&bao.addr(), &bao.ca(), "{ echo-token = \"echo_token\" }")
    );
    let daemon = TestDaemon::builder().dropin(&dropin).start().await;
    daemon
        .wait_for_log(|l| l.contains("renewed the Vault token"))
        .await;
    daemon
        .wait_for_log(|l| l.contains("cannot be renewed any further") && l.contains("expires_in_s"))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logs = daemon.logs();
    let said = logs
        .iter()
        .filter(|l| l.contains("cannot be renewed any further"))
        .count();
    assert_eq!(said, 1, "{logs:#?}");
    assert_clean(&logs, &[&token]);
}

/// The TLS key in the store and its certificate on disk, rotated key first: the refreshed
/// key is refused while the old certificate is on disk (the old pair serves), the new
/// certificate is refused with the old key, and the next refresh offers the key again and
/// the new pair is served; no SIGHUP.
#[tokio::test]
async fn a_tls_key_in_the_store_and_its_certificate_on_disk_rotate_together() {
    let bao = Bao::start();
    let pki = Arc::new(TestPki::new());
    let key = store_tls_key(&bao, &pki);
    let secrets = root_token_files();
    let dropin = format!(
        "[tls]\nkey = \"secret:tls_key\"\n{}{}refresh_interval = \"1s\"\n",
        file_source(secrets.path()),
        vault_token_source(&bao.addr(), &bao.ca(), "{ tls_key = \"tls_key\" }")
    );
    let daemon = TestDaemon::builder()
        .pki(pki.clone())
        .dropin(&dropin)
        .start()
        .await;
    daemon
        .wait_for_log(|l| l.contains("following the TLS files on disk by inotify"))
        .await;
    let old = crate::watch::leaf_der(&pki.path("server.crt"));
    let next = pki.ca.issue(&crate::watch::server_leaf("rotated")).unwrap();

    bao.run(&[
        "kv",
        "put",
        "secret/devices/gw",
        &format!("tls_key={}", next.key),
    ]);
    daemon
        .wait_for_log(|l| {
            l.contains("refreshed secrets rejected") && l.contains("do not go together")
        })
        .await;
    assert_eq!(crate::watch::served(&daemon).await.unwrap(), old);

    vitals::pki::write_file(&pki.path("next.crt"), &next.cert, 0o644).unwrap();
    std::fs::rename(pki.path("next.crt"), pki.path("server.crt")).unwrap();
    crate::watch::until_served(&daemon, &crate::watch::leaf_der(&pki.path("server.crt"))).await;
    daemon.echo_ok().await;
    assert!(
        !daemon
            .logs()
            .iter()
            .any(|l| l.contains("reloaded the config"))
    );
    assert_clean(
        &daemon.logs(),
        &[crate::support::bao::ROOT_TOKEN, &key, &next.key],
    );
}

/// Forwards connections on `port` to the store until aborted (then the port refuses).
fn forward(port: u16, bao_port: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(("127.0.0.1", bao_port))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    })
}

/// The store unreachable at refresh time: said once, the secrets in use stay and serve;
/// once it is back, the refresh says so and a value changed meanwhile arrives.
#[tokio::test]
async fn a_store_outage_during_refresh_is_said_once_and_ridden_out() {
    let bao = Bao::start();
    let (old, new) = ("echo-token-old-4f1a7c93", "echo-token-new-e85b20d6");
    bao.run(&[
        "kv",
        "put",
        "secret/devices/gw",
        &format!("echo_token={old}"),
    ]);
    let port = crate::support::free_port();
    let forwarder = forward(port, bao.port);
    let secrets = root_token_files();
    let dropin = format!(
        "{}{}refresh_interval = \"1s\"\n{BEARER_ON_ECHO}",
        file_source(secrets.path()),
        vault_token_source(
            &format!("https://localhost:{port}"),
            &bao.ca(),
            "{ echo-token = \"echo_token\" }"
        )
    );
    let daemon = TestDaemon::builder().dropin(&dropin).start().await;
    echo_with_bearer(&daemon, old).await.unwrap();

    forwarder.abort();
    daemon
        .wait_for_log(|l| {
            l.contains("refreshing secrets failed") && l.contains("vault https://localhost")
        })
        .await;
    bao.run(&[
        "kv",
        "put",
        "secret/devices/gw",
        &format!("echo_token={new}"),
    ]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    echo_with_bearer(&daemon, old)
        .await
        .expect("the secrets in use serve");
    let failed = daemon
        .logs()
        .iter()
        .filter(|l| l.contains("refreshing secrets failed"))
        .count();
    assert_eq!(failed, 1, "said once per outage");

    let _forwarder = forward(port, bao.port);
    daemon
        .wait_for_log(|l| l.contains("refreshing secrets works again"))
        .await;
    crate::support::eventually(Duration::from_secs(10), || echo_with_bearer(&daemon, new)).await;
    assert_clean(&daemon.logs(), &[old, new, crate::support::bao::ROOT_TOKEN]);
}
