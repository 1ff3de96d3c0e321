//! Logging with tracing: to journald when stderr is the journal (or when asked), as JSON
//! lines when asked, as readable text otherwise. Level and format can change after start
//! (the config is read after logging starts, and a reload may change the level).

use std::{io::IsTerminal, os::unix::fs::MetadataExt, sync::Mutex};

use tracing_subscriber::{
    Layer, Registry,
    filter::{LevelFilter, Targets},
    layer::Layered,
    layer::SubscriberExt,
    reload,
    util::SubscriberInitExt,
};

use crate::config::{Log, LogFormat};

type Base = Layered<reload::Layer<Targets, Registry>, Registry>;
type Output = Box<dyn Layer<Base> + Send + Sync>;

/// Handles to change logging after it started.
pub struct Telemetry {
    filter: reload::Handle<Targets, Registry>,
    output: reload::Handle<Output, Base>,
    format: Mutex<Resolved>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    Text,
    Json,
    Journald,
}

/// Logs a panic once, through tracing, with its location: inside a call it carries the
/// call's span (request id, trace id), and the call layer turns it into INTERNAL.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a non-text panic payload");
        let location = info.location().map_or_else(
            || "an unknown location".to_string(),
            |l| format!("{}:{}", l.file(), l.line()),
        );
        tracing::error!(target: "vitals::panic", location = %location, "panic at {location}: {message}");
    }));
}

/// Starts logging at `info` in the automatic format, and logs panics. Call once.
pub fn init() -> Telemetry {
    log_panics();
    let (filter, filter_handle) = reload::Layer::new(default_filter());
    let format = resolve(LogFormat::Auto);
    let (output, output_handle) = reload::Layer::new(output(format));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    Telemetry {
        filter: filter_handle,
        output: output_handle,
        format: Mutex::new(format),
    }
}

impl Telemetry {
    /// Applies the configured level and format.
    pub fn apply(&self, log: &Log) {
        let filter: Targets = log.level.parse().unwrap_or_else(|_| default_filter());
        let access = if log.access {
            LevelFilter::INFO
        } else {
            LevelFilter::OFF
        };
        let filter = filter.with_target(ACCESS_TARGET, access);
        let _ = self.filter.reload(filter);
        let format = resolve(log.format);
        let mut current = self.format.lock().unwrap_or_else(|e| e.into_inner());
        if *current != format {
            *current = format;
            let _ = self.output.reload(output(format));
        }
    }
}

/// The target of the per-call access lines, switched by `log.access`.
pub const ACCESS_TARGET: &str = "vitals::access";

fn default_filter() -> Targets {
    Targets::new()
        .with_default(tracing::Level::INFO)
        .with_target(ACCESS_TARGET, LevelFilter::OFF)
}

/// `$JOURNAL_STREAM` is `device:inode` of the journal's stream; stderr is the journal when
/// it is that same file.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

fn resolve(format: LogFormat) -> Resolved {
    match format {
        LogFormat::Auto if stderr_is_journal() => Resolved::Journald,
        LogFormat::Auto | LogFormat::Text => Resolved::Text,
        LogFormat::Json => Resolved::Json,
        LogFormat::Journald => Resolved::Journald,
    }
}

fn output(format: Resolved) -> Output {
    match format {
        Resolved::Journald => match tracing_journald::layer() {
            Ok(layer) => {
                // Fields keep their own names (GRPC_CODE, not F_GRPC_CODE) so that
                // `journalctl GRPC_CODE=...` works; info is syslog's informational (6), not
                // notice (5), which is for conditions that deserve a look.
                let priorities = tracing_journald::PriorityMappings {
                    info: tracing_journald::Priority::Informational,
                    debug: tracing_journald::Priority::Debug,
                    ..tracing_journald::PriorityMappings::new()
                };
                return Box::new(
                    layer
                        .with_syslog_identifier("vitalsd".to_string())
                        .with_field_prefix(None)
                        .with_priority_mappings(priorities),
                );
            }
            Err(err) => eprintln!("vitalsd: journald is not reachable ({err}); logging to stderr"),
        },
        Resolved::Json => {
            return Box::new(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            );
        }
        Resolved::Text => {}
    }
    Box::new(
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr),
    )
}
