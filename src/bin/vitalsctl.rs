//! vitalsctl: the client of vitalsd.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use vitals::{
    client::{DEV_ADDR, DEV_DIR, Dial},
    pki::DevPki,
    proto::{
        echo::{EchoRequest, echo_client::EchoClient},
        health::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        },
        metrics::{SnapshotRequest, metrics_client::MetricsClient},
    },
};

const USAGE: &str = "\
usage: vitalsctl [connection options] <command> [command options]

connection options:
  --dev                     the dev PKI in certs/dev and 127.0.0.1:50051
  --addr HOST:PORT          the daemon (default 127.0.0.1:50051)
  --tls-ca-cert FILE        CA bundle that issued the server certificate
  --tls-client-cert FILE    client certificate (PEM)
  --tls-client-key FILE     client key (PEM, mode 0600)
  --tls-server-name NAME    name to expect in the server certificate
  --plaintext               no TLS (the health-only listener)
  --timeout DURATION        deadline of the call (default 5s)

commands:
  probe [--service NAME]    grpc.health.v1 Check; exit 0 serving, 4 not serving
        example: vitalsctl --dev probe --service vitals.echo.v1.Echo
  echo MESSAGE [-H 'k: v']  call vitals.echo.v1.Echo/Echo, print headers and reply
        example: vitalsctl --dev echo hello -H 'x-request-id: 42'
  metrics [--json]          one metrics snapshot
        example: vitalsctl --dev metrics --json
  certs init --out DIR [--san NAME]...
                            write a dev CA and server/client certificates
        example: vitalsctl certs init --out certs/dev --san device.local

exit codes: 0 ok, 1 bad arguments or TLS files, 2 connection failed,
            3 call failed, 4 not serving";

#[derive(Default)]
struct Conn {
    dev: bool,
    addr: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
    plaintext: bool,
    timeout: Option<Duration>,
}

impl Conn {
    fn dial(&self) -> anyhow::Result<Dial> {
        let addr = self.addr.clone().unwrap_or_else(|| DEV_ADDR.to_string());
        let mut dial = if self.plaintext {
            Dial::plaintext(&addr)
        } else if self.dev {
            Dial::dev(&addr, std::path::Path::new(DEV_DIR))?
        } else {
            match (&self.ca, &self.cert, &self.key) {
                (Some(ca), Some(cert), Some(key)) => Dial::mtls(&addr, ca, cert, key)?,
                _ => bail!(
                    "give --tls-ca-cert, --tls-client-cert and --tls-client-key, or --dev, or --plaintext"
                ),
            }
        };
        dial.server_name = self.server_name.clone();
        Ok(dial)
    }

    fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(5))
    }
}

enum Command {
    Probe {
        service: String,
    },
    Echo {
        message: String,
        headers: Vec<(String, String)>,
    },
    Metrics {
        json: bool,
    },
    CertsInit {
        out: PathBuf,
        sans: Vec<String>,
    },
}

/// Exit codes, as grpc_health_probe has them.
const EXIT_ARGS: u8 = 1;
const EXIT_CONNECT: u8 = 2;
const EXIT_RPC: u8 = 3;
const EXIT_NOT_SERVING: u8 = 4;

fn parse() -> Result<Option<(Conn, Command)>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut conn = Conn::default();
    let mut parser = lexopt::Parser::from_env();
    let mut command: Option<String> = None;
    let mut positional = Vec::new();
    let (mut service, mut json, mut out, mut sans, mut headers) =
        (String::new(), false, None, Vec::new(), Vec::new());
    while let Some(arg) = parser.next()? {
        match arg {
            Long("dev") => conn.dev = true,
            Long("addr") => conn.addr = Some(parser.value()?.string()?),
            Long("tls-ca-cert") => conn.ca = Some(parser.value()?.into()),
            Long("tls-client-cert") => conn.cert = Some(parser.value()?.into()),
            Long("tls-client-key") => conn.key = Some(parser.value()?.into()),
            Long("tls-server-name") => conn.server_name = Some(parser.value()?.string()?),
            Long("plaintext") => conn.plaintext = true,
            Long("timeout") => {
                let value = parser.value()?.string()?;
                conn.timeout = Some(vitals::config::parse_duration(&value)?);
            }
            Long("service") => service = parser.value()?.string()?,
            Long("json") => json = true,
            Long("out") => out = Some(PathBuf::from(parser.value()?)),
            Long("san") => sans.push(parser.value()?.string()?),
            Short('H') | Long("header") => {
                let value = parser.value()?.string()?;
                let (k, v) = value
                    .split_once(':')
                    .ok_or_else(|| format!("header `{value}` is not `key: value`"))?;
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            Long("help") | Short('h') => return Ok(None),
            Value(value) if command.is_none() => command = Some(value.string()?),
            Value(value) => positional.push(value.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    let command = match command.as_deref() {
        Some("probe") => Command::Probe { service },
        Some("echo") => Command::Echo {
            message: positional.join(" "),
            headers,
        },
        Some("metrics") => Command::Metrics { json },
        Some("certs") if positional.first().map(String::as_str) == Some("init") => {
            Command::CertsInit {
                out: out.ok_or("certs init needs --out DIR")?,
                sans,
            }
        }
        Some(other) => return Err(format!("unknown command `{other}`").into()),
        None => return Ok(None),
    };
    Ok(Some((conn, command)))
}

fn main() -> ExitCode {
    let (conn, command) = match parse() {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("vitalsctl: {err}\n\n{USAGE}");
            return ExitCode::from(EXIT_ARGS);
        }
    };
    if let Command::CertsInit { out, sans } = &command {
        return match DevPki::generate(sans).and_then(|pki| pki.write(out)) {
            Ok(()) => {
                println!(
                    "wrote ca.crt server.crt server.key client.crt client.key to {}",
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("vitalsctl: {err:#}");
                ExitCode::from(EXIT_ARGS)
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(run(conn, command))
}

async fn run(conn: Conn, command: Command) -> ExitCode {
    let dial = match conn.dial() {
        Ok(dial) => dial,
        Err(err) => {
            eprintln!("vitalsctl: {err:#}");
            return ExitCode::from(EXIT_ARGS);
        }
    };
    let channel = match dial.connect().await {
        Ok(channel) => channel,
        Err(err) => {
            eprintln!("vitalsctl: {err:#}");
            return ExitCode::from(EXIT_CONNECT);
        }
    };
    let result = match command {
        Command::Probe { service } => probe(channel, service, conn.timeout()).await,
        Command::Echo { message, headers } => echo(channel, message, headers, conn.timeout()).await,
        Command::Metrics { json } => metrics(channel, json, conn.timeout()).await,
        Command::CertsInit { .. } => unreachable!("handled before connecting"),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vitalsctl: {err:#}");
            ExitCode::from(EXIT_RPC)
        }
    }
}

fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

async fn probe(
    channel: tonic::transport::Channel,
    service: String,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let response = HealthClient::new(channel)
        .check(request(
            HealthCheckRequest {
                service: service.clone(),
            },
            timeout,
        ))
        .await
        .context("health check")?;
    let status = response.into_inner().status();
    println!("status: {}", status.as_str_name());
    Ok(match status {
        ServingStatus::Serving => ExitCode::SUCCESS,
        _ => ExitCode::from(EXIT_NOT_SERVING),
    })
}

async fn echo(
    channel: tonic::transport::Channel,
    message: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let mut req = request(
        EchoRequest {
            echo_message: message,
            ..Default::default()
        },
        timeout,
    );
    for (key, value) in headers {
        let key: tonic::metadata::MetadataKey<_> = key
            .parse()
            .with_context(|| format!("header name `{key}`"))?;
        req.metadata_mut()
            .append(key, value.parse().context("header value")?);
    }
    let response = EchoClient::new(channel).echo(req).await.context("echo")?;
    for (key, value) in response.metadata().as_ref() {
        println!("< {key}: {}", value.to_str().unwrap_or("<binary>"));
    }
    let reply = response.into_inner();
    println!("{}", reply.echo_message);
    Ok(ExitCode::SUCCESS)
}

async fn metrics(
    channel: tonic::transport::Channel,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let snapshot = MetricsClient::new(channel)
        .snapshot(request(SnapshotRequest {}, timeout))
        .await
        .context("metrics snapshot")?
        .into_inner();
    if json {
        println!("{}", vitals::client::snapshot_json(&snapshot));
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", vitals::client::snapshot_table(&snapshot));
    Ok(ExitCode::SUCCESS)
}
