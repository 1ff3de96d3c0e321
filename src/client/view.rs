//! Metrics snapshots as a human table or as JSON.

use std::fmt::Write;

use crate::proto::metrics::Snapshot;

pub fn snapshot_json(snapshot: &Snapshot) -> String {
    serde_json::to_string_pretty(snapshot).expect("a snapshot is always serializable")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

/// A readable multi-line summary.
pub fn snapshot_table(s: &Snapshot) -> String {
    let mut out = String::new();
    let w = &mut out;
    if let Some(h) = &s.host {
        let _ = writeln!(
            w,
            "host     {} ({}, kernel {}, {})",
            h.hostname, h.arch, h.kernel_version, h.os
        );
        let _ = writeln!(
            w,
            "uptime   {}h{:02}m",
            h.uptime_secs / 3600,
            h.uptime_secs % 3600 / 60
        );
    }
    if let Some(c) = &s.cpu {
        let cores: Vec<String> = c
            .cores
            .iter()
            .map(|core| format!("{:.0}%", core.usage_percent))
            .collect();
        let _ = writeln!(
            w,
            "cpu      {:.1}%  cores [{}]  load {:.2} {:.2} {:.2}",
            c.usage_percent,
            cores.join(" "),
            c.load_1,
            c.load_5,
            c.load_15
        );
    }
    if let Some(m) = &s.memory {
        let _ = writeln!(
            w,
            "memory   {} available of {}  swap {} used of {}",
            mib(m.available_bytes),
            mib(m.total_bytes),
            mib(m.swap_used_bytes),
            mib(m.swap_total_bytes)
        );
        if let Some(cg) = &m.cgroup {
            let _ = writeln!(
                w,
                "cgroup   {} used of {} limit",
                mib(cg.used_bytes),
                mib(cg.limit_bytes)
            );
        }
    }
    for f in &s.filesystems {
        let _ = writeln!(
            w,
            "fs       {:<20} {} free of {} ({}{})",
            f.mount_point,
            gib(f.available_bytes),
            gib(f.total_bytes),
            f.fs_type,
            if f.read_only { ", ro" } else { "" }
        );
    }
    for n in &s.networks {
        let _ = writeln!(
            w,
            "net      {:<12} rx {} ({:.1} KiB/s)  tx {} ({:.1} KiB/s)",
            n.name,
            mib(n.rx_bytes),
            n.rx_bytes_per_sec / 1024.0,
            mib(n.tx_bytes),
            n.tx_bytes_per_sec / 1024.0
        );
    }
    for t in &s.temperatures {
        let reading = t.celsius.map_or("-".to_string(), |c| format!("{c:.1}°C"));
        let _ = writeln!(w, "temp     {:<24} {reading}", t.label);
    }
    if let Some(p) = &s.process {
        let _ = writeln!(
            w,
            "vitalsd  pid {}  rss {}  cpu {:.1}%  fds {}  threads {}",
            p.pid,
            mib(p.rss_bytes),
            p.cpu_percent,
            p.open_fds,
            p.threads
        );
    }
    for m in &s.rpc {
        let codes: Vec<String> = m
            .statuses
            .iter()
            .map(|c| format!("{} {}", c.code, c.count))
            .collect();
        let mean = m.latency_sum_micros.checked_div(m.calls).unwrap_or(0);
        let _ = writeln!(
            w,
            "rpc      {:<48} calls {}  in flight {}  mean {}us  [{}]",
            m.method,
            m.calls,
            m.in_flight,
            mean,
            codes.join(", ")
        );
    }
    for check in s.health_checks.iter().filter(|c| c.failing) {
        let on = if check.subject.is_empty() {
            String::new()
        } else {
            format!(" {}", check.subject)
        };
        let _ = writeln!(w, "failing  {}{on}: {}", check.check, check.reason);
    }
    out
}

/// A live view: each snapshot as a table, with RPC call rates since the one before.
#[derive(Default)]
pub struct MetricsView {
    last: Option<(std::time::Instant, Vec<(String, u64)>)>,
}

impl MetricsView {
    pub fn render(&mut self, snapshot: &Snapshot) -> String {
        let mut out = snapshot_table(snapshot);
        let now = std::time::Instant::now();
        let calls: Vec<(String, u64)> = snapshot
            .rpc
            .iter()
            .map(|m| (m.method.clone(), m.calls))
            .collect();
        if let Some((then, before)) = &self.last {
            let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
            for (method, n) in &calls {
                let old = before
                    .iter()
                    .find(|(m, _)| m == method)
                    .map_or(0, |(_, n)| *n);
                let rate = n.saturating_sub(old) as f64 / secs;
                if rate > 0.0 {
                    let _ = writeln!(out, "rate     {method:<48} {rate:.1} calls/s");
                }
            }
        }
        self.last = Some((now, calls));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::metrics::MethodStats;

    fn snapshot(calls: u64) -> Snapshot {
        Snapshot {
            rpc: vec![MethodStats {
                method: "/vitals.echo.v1.Echo/Echo".into(),
                calls,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The live view shows a call rate from the second snapshot on.
    #[test]
    fn live_view_shows_rates() {
        let mut view = MetricsView::default();
        assert!(!view.render(&snapshot(10)).contains("calls/s"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = view.render(&snapshot(30));
        assert!(
            second.contains("rate") && second.contains("calls/s"),
            "{second}"
        );
        assert!(second.contains("calls 30"), "{second}");
    }

    /// The table names each failing check, with its subject and reason; passing ones are
    /// left out.
    #[test]
    fn table_names_failing_checks() {
        use crate::proto::metrics::HealthCheck;
        let mut s = snapshot(1);
        s.health_checks = vec![
            HealthCheck {
                check: "disk_free".into(),
                subject: "/".into(),
                failing: true,
                reason: "filesystem / has 1.0% free, below 2%".into(),
            },
            HealthCheck {
                check: "sample_fresh".into(),
                ..Default::default()
            },
        ];
        let table = snapshot_table(&s);
        assert!(
            table.contains("failing  disk_free /: filesystem / has 1.0% free, below 2%\n"),
            "{table}"
        );
        assert!(!table.contains("sample_fresh"), "{table}");
    }
}
