//! `vitalsctl rotate`: asks the daemon to renew its server certificate now (the
//! vitals.admin.v1.Admin/Rotate method, which needs an ACL grant and `[tls.issue]`), and
//! prints the new serial and notAfter: the flags, the usage, the call and the output.

use std::time::{Duration, SystemTime};

use lexopt::Parser;
use vitals::{
    client::{exit, probe},
    proto::admin::{RotateRequest, admin_client::AdminClient},
    rpc_stats::code_name,
};

use crate::flags::{self, Common, ConnArgs, Error, Table, invalid};

/// rotate has no long flags of its own.
pub const FLAGS: Table = &[];

/// What `vitalsctl help rotate` and `vitalsctl rotate --help` print.
pub const USAGE: &str = "\
usage: vitalsctl [connection options] rotate [--json]

Renews the daemon's server certificate now from its [tls.issue] pki engine, and prints the
new certificate's serial and notAfter. New connections get the new certificate; open ones
keep theirs. The caller needs a grant for vitals.admin.v1.Admin/Rotate in [[auth.rules]]
(none covers it by default). A daemon without [tls.issue] answers FAILED_PRECONDITION; a
renewal that fails answers UNAVAILABLE with the reason (exit 3): the pki unreachable or
refusing, or a certificate it answered with that the daemon refused (another key, other
names, expired, not chaining to tls.issue.issuer_ca). The daemon then keeps serving its
current certificate and writes nothing. The default --timeout is 30s: the daemon waits for
the pki.

  --json                 {\"serial\": \"..\", \"not_after_unix\": N}

examples:
  vitalsctl --addr gw-17:50051 --tls-ca-cert ca.crt --tls-client-cert op.crt \\
      --tls-client-key op.key rotate";

#[derive(Debug)]
pub struct Args {
    pub conn: ConnArgs,
    pub timeout: Duration,
}

/// Reads rotate's flags after the command word; `None` when they ask for the usage.
pub fn parse(mut parser: Parser, mut common: Common) -> Result<Option<Args>, Error> {
    while let Some(flag) = flags::next(&mut parser)? {
        if flag.is_help() {
            return Ok(None);
        }
        if !common.take(&flag, &mut parser)? {
            return Err(flag.unexpected("rotate"));
        }
    }
    let timeout = common.timeout("timeout", Duration::from_secs(30))?;
    let conn = common.conn(false, Duration::from_secs(5), true)?;
    if conn.addrs.len() > 1 {
        return Err(invalid("rotate renews one server: give one --addr"));
    }
    Ok(Some(Args { conn, timeout }))
}

/// Calls Rotate once and prints what it answered.
pub async fn run(args: Args) -> u8 {
    let conn = &args.conn;
    let open = match conn.open_one().await {
        Ok(open) => open,
        Err(code) => return code,
    };
    let mut client = AdminClient::new(open.channel.clone());
    let mut request = tonic::Request::new(RotateRequest {});
    request.set_timeout(args.timeout);
    probe::add_headers(&mut request, &conn.headers);
    let code = match client.rotate(request).await {
        Ok(answer) => {
            let answer = answer.into_inner();
            if conn.json {
                println!(
                    "{}",
                    serde_json::json!({"serial": answer.serial, "not_after_unix": answer.not_after_unix})
                );
            } else {
                let left = u64::try_from(answer.not_after_unix)
                    .ok()
                    .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or_default();
                println!(
                    "rotated: serial {}, not after {} unix time ({}s from now)",
                    answer.serial,
                    answer.not_after_unix,
                    left.as_secs()
                );
            }
            exit::OK
        }
        Err(status) => {
            eprintln!(
                "error: rotate: {}: {}",
                code_name(status.code()),
                status.message()
            );
            exit::RPC
        }
    };
    drop(client);
    drop(open.channel);
    open.liveness.closed(Duration::from_millis(600)).await;
    code
}
