//! `vitalsctl metrics`: one metrics snapshot as a table or JSON, or a live view of the Watch
//! stream with RPC rates between snapshots: the flags, the usage, and the output. The
//! rendering is `vitals::client::view`'s.

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use lexopt::{Parser, ValueExt};
use vitals::{
    client::{MetricsView, exit, probe, snapshot_json, snapshot_table},
    proto::metrics::{SnapshotRequest, WatchRequest, metrics_client::MetricsClient},
    rpc_stats::code_name,
};

use crate::flags::{self, Common, ConnArgs, Error, Flag, Table, invalid, parse_duration};

/// metrics' own long flags, for [`flags::normalise`]. `--watch`'s interval is optional
/// (attached, or the next word if that is a duration), so it is listed as taking no value.
pub const FLAGS: Table = &[("watch", false)];

/// What `vitalsctl help metrics` and `vitalsctl metrics --help` print.
pub const USAGE: &str = "\
usage: vitalsctl metrics [--json] [--watch [INTERVAL]]

  --json                 the snapshot as JSON (one line per snapshot with --watch)
  --watch [INTERVAL]     a live view, refreshed every INTERVAL (default 1s; the server raises
                         it to its sampling interval), with RPC rates between snapshots

examples:
  vitalsctl --dev metrics
  vitalsctl --dev metrics --json | jq .memory
  vitalsctl --dev metrics --watch 2s";

#[derive(Debug)]
pub struct Args {
    pub conn: ConnArgs,
    pub timeout: Duration,
    /// Follow the Watch stream at this interval.
    pub watch: Option<Duration>,
}

/// Reads metrics' flags after the command word; `None` when they ask for the usage.
pub fn parse(mut parser: Parser, mut common: Common) -> Result<Option<Args>, Error> {
    let mut watch = None;
    while let Some(flag) = flags::next(&mut parser)? {
        if flag.is_help() {
            return Ok(None);
        }
        match &flag {
            Flag::Long(name) if name == "watch" => {
                // An interval may follow, attached (`--watch=2s`) or as the next argument.
                let attached = parser.optional_value().map(|v| v.string()).transpose()?;
                let interval = match attached {
                    Some(v) => Some(v),
                    None => parser
                        .try_raw_args()
                        .and_then(|mut raw| {
                            raw.next_if(|a| a.to_str().is_some_and(|s| parse_duration(s).is_ok()))
                        })
                        .and_then(|a| a.into_string().ok()),
                };
                let interval = match interval {
                    Some(v) => parse_duration(&v).map_err(|e| invalid(format!("--watch: {e}")))?,
                    None => Duration::from_secs(1),
                };
                if interval.is_zero() {
                    return Err(invalid("--watch: the interval must be greater than zero"));
                }
                watch = Some(interval);
            }
            _ if common.take(&flag, &mut parser)? => {}
            _ => return Err(flag.unexpected("metrics")),
        }
    }
    let timeout = common.timeout("timeout", Duration::from_secs(5))?;
    let conn = common.conn(false, Duration::from_secs(5), true)?;
    if conn.addrs.len() > 1 {
        return Err(invalid("metrics reads one server: give one --addr"));
    }
    Ok(Some(Args {
        conn,
        timeout,
        watch,
    }))
}

/// Prints one snapshot, or follows the Watch stream until it ends or Ctrl-C.
pub async fn run(args: Args) -> u8 {
    let conn = &args.conn;
    let open = match conn.open_one().await {
        Ok(open) => open,
        Err(code) => return code,
    };
    let mut client = MetricsClient::new(open.channel.clone());
    let code = match args.watch {
        None => {
            let mut request = tonic::Request::new(SnapshotRequest {});
            request.set_timeout(args.timeout);
            probe::add_headers(&mut request, &conn.headers);
            match client.snapshot(request).await {
                Ok(snapshot) if conn.json => {
                    println!("{}", snapshot_json(snapshot.get_ref()));
                    exit::OK
                }
                Ok(snapshot) => {
                    print!("{}", snapshot_table(snapshot.get_ref()));
                    exit::OK
                }
                Err(status) => {
                    eprintln!(
                        "error: metrics snapshot: {}: {}",
                        code_name(status.code()),
                        status.message()
                    );
                    exit::RPC
                }
            }
        }
        Some(interval) => {
            let interval_ms = u32::try_from(interval.as_millis()).unwrap_or(u32::MAX);
            let mut request = tonic::Request::new(WatchRequest { interval_ms });
            probe::add_headers(&mut request, &conn.headers);
            let tty = std::io::stdout().is_terminal();
            let mut view = MetricsView::default();
            let watching = async {
                let mut stream = client.watch(request).await?.into_inner();
                while let Some(snapshot) = stream.message().await? {
                    if conn.json {
                        println!("{}", serde_json::to_string(&snapshot).expect("serialises"));
                    } else {
                        let text = view.render(&snapshot);
                        if tty {
                            // Home and clear, then the new picture.
                            print!("\x1b[H\x1b[2J{text}");
                        } else {
                            println!("{text}");
                        }
                    }
                    let _ = std::io::stdout().flush();
                }
                Ok::<_, tonic::Status>(())
            };
            tokio::select! {
                ended = watching => match ended {
                    Ok(()) => exit::OK,
                    Err(status) => {
                        eprintln!("error: metrics watch: {}: {}", code_name(status.code()), status.message());
                        exit::RPC
                    }
                },
                () = crate::interrupted() => exit::OK,
            }
        }
    };
    drop(client);
    drop(open.channel);
    open.liveness.closed(Duration::from_millis(600)).await;
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, tests::argv};

    /// `metrics --watch` takes an optional interval, attached or next.
    #[test]
    fn metrics_watch_interval() {
        let watch = |line: &str| match crate::parse(argv(line)) {
            Ok(Command::Metrics(m)) => m.watch,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(watch("--dev metrics"), None);
        assert_eq!(watch("--dev metrics --watch"), Some(Duration::from_secs(1)));
        assert_eq!(
            watch("--dev metrics --watch 2s"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watch("--dev metrics -watch=500ms --json"),
            Some(Duration::from_millis(500))
        );
    }
}
