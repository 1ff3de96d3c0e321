//! node_exporter's families from what a scrape or a push read live (sampler/live.rs):
//! diskstats, vmstat, the rest of netdev, netclass, netstat, sockstat, softnet, arp,
//! filefd, conntrack, entropy, timex, time, the scrape collector's own timings, and the
//! textfile collector's files, under node_exporter's names, labels, types and help.

use super::{Sink, Type, single};
use crate::sampler::{
    LiveSample,
    net::{CONNTRACK_STATS, NETDEV_NAMES},
    netclass::PROPERTIES,
    textfile::Kind,
};

/// A sink that remembers each family name it passed on, so the textfile's families can be
/// refused when they reuse one of ours (node_exporter fails the whole scrape then; here
/// only that family is left out, and node_textfile_scrape_error says so).
pub(super) struct Names<'a> {
    sink: &'a mut dyn Sink,
    /// Whether names are remembered: only when there are textfile families to check.
    track: bool,
    seen: Vec<u64>,
}

impl<'a> Names<'a> {
    pub(super) fn new(sink: &'a mut dyn Sink, live: &LiveSample) -> Names<'a> {
        let track = live
            .textfile
            .as_ref()
            .is_some_and(|c| !c.families.is_empty());
        Names {
            sink,
            track,
            seen: Vec::with_capacity(if track { 512 } else { 0 }),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.seen.contains(&fnv(name))
    }
}

impl Sink for Names<'_> {
    fn family(&mut self, name: &str, help: &str, kind: Type) {
        if self.track {
            self.seen.push(fnv(name));
        }
        self.sink.family(name, help, kind);
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        self.sink.sample(suffix, labels, value);
    }
}

/// FNV-1a: a name's fingerprint (a collision would only refuse a textfile family).
fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// /proc/diskstats fields: (name after `node_disk_`, help, type, scale), in the file's order.
const DISK: [(&str, &str, Type, f64); 17] = [
    (
        "reads_completed_total",
        "The total number of reads completed successfully.",
        Type::Counter,
        1.0,
    ),
    (
        "reads_merged_total",
        "The total number of reads merged.",
        Type::Counter,
        1.0,
    ),
    (
        "read_bytes_total",
        "The total number of bytes read successfully.",
        Type::Counter,
        512.0,
    ),
    (
        "read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        Type::Counter,
        0.001,
    ),
    (
        "writes_completed_total",
        "The total number of writes completed successfully.",
        Type::Counter,
        1.0,
    ),
    (
        "writes_merged_total",
        "The number of writes merged.",
        Type::Counter,
        1.0,
    ),
    (
        "written_bytes_total",
        "The total number of bytes written successfully.",
        Type::Counter,
        512.0,
    ),
    (
        "write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        Type::Counter,
        0.001,
    ),
    (
        "io_now",
        "The number of I/Os currently in progress.",
        Type::Gauge,
        1.0,
    ),
    (
        "io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        Type::Counter,
        0.001,
    ),
    (
        "io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        Type::Counter,
        0.001,
    ),
    (
        "discards_completed_total",
        "The total number of discards completed successfully.",
        Type::Counter,
        1.0,
    ),
    (
        "discards_merged_total",
        "The total number of discards merged.",
        Type::Counter,
        1.0,
    ),
    (
        "discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        Type::Counter,
        1.0,
    ),
    (
        "discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        Type::Counter,
        0.001,
    ),
    (
        "flush_requests_total",
        "The total number of flush requests completed successfully",
        Type::Counter,
        1.0,
    ),
    (
        "flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        Type::Counter,
        0.001,
    ),
];

/// Every family of a live read but the textfile's.
pub(super) fn live(live: &LiveSample, sink: &mut dyn Sink) {
    let mut name = String::with_capacity(64);
    let mut help = String::with_capacity(96);
    let mut named = |prefix: &str, rest: &str| {
        name.clear();
        name.push_str(prefix);
        name.push_str(rest);
        name.clone()
    };

    if !live.disks.is_empty() {
        sink.family(
            "node_disk_info",
            "Info of /sys/block/<block_device>.",
            Type::Gauge,
        );
        for (d, info) in &live.disks {
            let [path, wwn, model, serial, revision] = &**info;
            sink.sample(
                "",
                &[
                    ("device", &d.device),
                    ("major", &d.major),
                    ("minor", &d.minor),
                    ("model", model),
                    ("path", path),
                    ("revision", revision),
                    ("serial", serial),
                    ("wwn", wwn),
                ],
                1.0,
            );
        }
        for (i, (suffix, text, kind, scale)) in DISK.iter().enumerate() {
            if live.disks.iter().all(|(d, _)| d.fields <= i) {
                continue;
            }
            sink.family(&named("node_disk_", suffix), text, *kind);
            for (d, _) in live.disks.iter().filter(|(d, _)| d.fields > i) {
                sink.sample("", &[("device", &d.device)], d.stats[i] as f64 * scale);
            }
        }
    }

    for (field, value) in &live.vmstat {
        help.clear();
        help.push_str("/proc/vmstat information field ");
        help.push_str(field);
        help.push('.');
        single(
            sink,
            &named("node_vmstat_", field),
            &help,
            Type::Untyped,
            *value,
        );
    }

    if !live.netdev.is_empty() {
        for (i, field) in NETDEV_NAMES.iter().enumerate() {
            netdev_family(sink, &mut help, &named("node_network_", field), field);
            for d in &live.netdev {
                sink.sample("", &[("device", &d.device)], d.counters[i] as f64);
            }
            if *field == "receive_multicast" && live.netdev.iter().any(|d| d.nohandler.is_some()) {
                netdev_family(
                    sink,
                    &mut help,
                    "node_network_receive_nohandler",
                    "receive_nohandler",
                );
                for d in &live.netdev {
                    if let Some(n) = d.nohandler {
                        sink.sample("", &[("device", &d.device)], n as f64);
                    }
                }
            }
        }
    }

    if !live.netclass.is_empty() {
        sink.family(
            "node_network_info",
            "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
            Type::Gauge,
        );
        for c in live.netclass.iter() {
            sink.sample(
                "",
                &[
                    ("address", &c.address),
                    ("broadcast", &c.broadcast),
                    ("device", &c.device),
                    ("duplex", &c.duplex),
                    ("ifalias", &c.ifalias),
                    ("operstate", &c.operstate),
                ],
                1.0,
            );
        }
        sink.family(
            "node_network_up",
            "Value is 1 if operstate is 'up', 0 otherwise.",
            Type::Gauge,
        );
        for c in live.netclass.iter() {
            sink.sample(
                "",
                &[("device", &c.device)],
                f64::from(u8::from(c.operstate == "up")),
            );
        }
        for (i, (_, suffix, counter, _)) in PROPERTIES.iter().enumerate() {
            if live.netclass.iter().all(|c| c.values[i].is_none()) {
                continue;
            }
            help.clear();
            help.push_str("Network device property: ");
            help.push_str(suffix);
            let kind = if *counter { Type::Counter } else { Type::Gauge };
            sink.family(&named("node_network_", suffix), &help, kind);
            for c in live.netclass.iter() {
                if let Some(v) = c.values[i] {
                    sink.sample("", &[("device", &c.device)], v);
                }
            }
        }
    }

    for (key, value) in &live.netstat {
        help.clear();
        help.push_str("Statistic ");
        help.extend(key.split('_'));
        help.push('.');
        single(
            sink,
            &named("node_netstat_", key),
            &help,
            Type::Untyped,
            *value,
        );
    }

    for (key, value) in &live.sockstat {
        help.clear();
        match key.split_once('_') {
            Some(("sockets", _)) => help.push_str("Number of IPv4 sockets in use."),
            Some((proto, field)) => {
                help.push_str("Number of ");
                help.push_str(proto);
                help.push_str(" sockets in state ");
                help.push_str(field);
                help.push('.');
            }
            None => {}
        }
        single(
            sink,
            &named("node_sockstat_", key),
            &help,
            Type::Gauge,
            *value,
        );
    }

    if !live.softnet.is_empty() {
        for (i, (suffix, text)) in [
            ("processed_total", "Number of processed packets"),
            ("dropped_total", "Number of dropped packets"),
            (
                "times_squeezed_total",
                "Number of times processing packets ran out of quota",
            ),
        ]
        .iter()
        .enumerate()
        {
            sink.family(&named("node_softnet_", suffix), text, Type::Counter);
            for (cpu, row) in live.softnet.iter().enumerate() {
                sink.sample("", &[("cpu", &cpu.to_string())], row[i] as f64);
            }
        }
    }

    if !live.arp.is_empty() {
        sink.family("node_arp_entries", "ARP entries by device", Type::Gauge);
        for (device, n) in &live.arp {
            sink.sample("", &[("device", device)], *n as f64);
        }
    }

    if live.udp_queues.0.is_some() || live.udp_queues.1.is_some() {
        sink.family(
            "node_udp_queues",
            "Number of allocated memory in the kernel for UDP datagrams in bytes.",
            Type::Gauge,
        );
        for (ip, queues) in [("v4", live.udp_queues.0), ("v6", live.udp_queues.1)] {
            if let Some((tx, rx)) = queues {
                sink.sample("", &[("ip", ip), ("queue", "rx")], rx);
                sink.sample("", &[("ip", ip), ("queue", "tx")], tx);
            }
        }
    }
    single(
        sink,
        "node_selinux_enabled",
        "SELinux is enabled, 1 is true, 0 is false",
        Type::Gauge,
        f64::from(u8::from(live.selinux_enabled)),
    );
    if let Some(max) = live.virtual_memory_max_bytes {
        single(
            sink,
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            Type::Gauge,
            max,
        );
    }

    if let Some([allocated, _, maximum]) = live.filefd {
        single(
            sink,
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            Type::Gauge,
            allocated,
        );
        single(
            sink,
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            Type::Gauge,
            maximum,
        );
    }

    let c = &live.conntrack;
    if let (Some(entries), Some(limit)) = (c.entries, c.limit) {
        single(
            sink,
            "node_nf_conntrack_entries",
            "Number of currently allocated flow entries for connection tracking.",
            Type::Gauge,
            entries,
        );
        single(
            sink,
            "node_nf_conntrack_entries_limit",
            "Maximum size of connection tracking table.",
            Type::Gauge,
            limit,
        );
    }
    if let Some(stats) = c.stats {
        for (stat, value) in CONNTRACK_STATS.iter().zip(stats) {
            let text = match *stat {
                "found" => "Number of searched entries which were successful.",
                "invalid" => "Number of packets seen which can not be tracked.",
                "ignore" => {
                    "Number of packets seen which are already connected to a conntrack entry."
                }
                "insert" => "Number of entries inserted into the list.",
                "insert_failed" => {
                    "Number of entries for which list insertion was attempted but failed."
                }
                "drop" => "Number of packets dropped due to conntrack failure.",
                "early_drop" => {
                    "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached."
                }
                _ => {
                    "Number of conntrack table lookups which had to be restarted due to hashtable resizes."
                }
            };
            single(
                sink,
                &named("node_nf_conntrack_stat_", stat),
                text,
                Type::Gauge,
                value,
            );
        }
    }

    if let Some((available, pool)) = live.entropy {
        single(
            sink,
            "node_entropy_available_bits",
            "Bits of available entropy.",
            Type::Gauge,
            available,
        );
        single(
            sink,
            "node_entropy_pool_size_bits",
            "Bits of entropy pool.",
            Type::Gauge,
            pool,
        );
    }

    if let Some(t) = &live.timex {
        for (suffix, text, kind, value) in [
            (
                "estimated_error_seconds",
                "Estimated error in seconds.",
                Type::Gauge,
                t.estimated_error_seconds,
            ),
            (
                "frequency_adjustment_ratio",
                "Local clock frequency adjustment.",
                Type::Gauge,
                t.frequency_adjustment_ratio,
            ),
            (
                "loop_time_constant",
                "Phase-locked loop time constant.",
                Type::Gauge,
                t.loop_time_constant,
            ),
            (
                "maxerror_seconds",
                "Maximum error in seconds.",
                Type::Gauge,
                t.maxerror_seconds,
            ),
            (
                "offset_seconds",
                "Time offset in between local system and reference clock.",
                Type::Gauge,
                t.offset_seconds,
            ),
            (
                "pps_calibration_total",
                "Pulse per second count of calibration intervals.",
                Type::Counter,
                t.pps_calibration_total,
            ),
            (
                "pps_error_total",
                "Pulse per second count of calibration errors.",
                Type::Counter,
                t.pps_error_total,
            ),
            (
                "pps_frequency_hertz",
                "Pulse per second frequency.",
                Type::Gauge,
                t.pps_frequency_hertz,
            ),
            (
                "pps_jitter_seconds",
                "Pulse per second jitter.",
                Type::Gauge,
                t.pps_jitter_seconds,
            ),
            (
                "pps_jitter_total",
                "Pulse per second count of jitter limit exceeded events.",
                Type::Counter,
                t.pps_jitter_total,
            ),
            (
                "pps_shift_seconds",
                "Pulse per second interval duration.",
                Type::Gauge,
                t.pps_shift_seconds,
            ),
            (
                "pps_stability_exceeded_total",
                "Pulse per second count of stability limit exceeded events.",
                Type::Counter,
                t.pps_stability_exceeded_total,
            ),
            (
                "pps_stability_hertz",
                "Pulse per second stability, average of recent frequency changes.",
                Type::Gauge,
                t.pps_stability_hertz,
            ),
            (
                "status",
                "Value of the status array bits.",
                Type::Gauge,
                t.status,
            ),
            (
                "sync_status",
                "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
                Type::Gauge,
                t.sync_status,
            ),
            (
                "tai_offset_seconds",
                "International Atomic Time (TAI) offset.",
                Type::Gauge,
                t.tai_offset_seconds,
            ),
            (
                "tick_seconds",
                "Seconds between clock ticks.",
                Type::Gauge,
                t.tick_seconds,
            ),
        ] {
            single(sink, &named("node_timex_", suffix), text, kind, value);
        }
    }

    if !live.clocksources.is_empty() {
        sink.family(
            "node_time_clocksource_available_info",
            "Available clocksources read from '/sys/devices/system/clocksource'.",
            Type::Gauge,
        );
        for c in live.clocksources.iter() {
            for source in &c.available {
                sink.sample("", &[("clocksource", source), ("device", &c.device)], 1.0);
            }
        }
        sink.family(
            "node_time_clocksource_current_info",
            "Current clocksource read from '/sys/devices/system/clocksource'.",
            Type::Gauge,
        );
        for c in live.clocksources.iter() {
            sink.sample(
                "",
                &[("clocksource", &c.current), ("device", &c.device)],
                1.0,
            );
        }
    }
    if let Some((zone, offset)) = &live.time_zone {
        sink.family(
            "node_time_zone_offset_seconds",
            "System time zone offset in seconds.",
            Type::Gauge,
        );
        sink.sample("", &[("time_zone", zone)], *offset as f64);
    }

    if !live.collectors.is_empty() {
        sink.family(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
            Type::Gauge,
        );
        for (collector, seconds, _) in &live.collectors {
            sink.sample("", &[("collector", collector)], *seconds);
        }
        sink.family(
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
            Type::Gauge,
        );
        for (collector, _, ok) in &live.collectors {
            sink.sample("", &[("collector", collector)], f64::from(u8::from(*ok)));
        }
    }
}

fn netdev_family(sink: &mut dyn Sink, help: &mut String, family: &str, field: &str) {
    help.clear();
    help.push_str("Network device statistic ");
    help.push_str(field);
    help.push('.');
    let mut name = String::with_capacity(family.len() + 6);
    name.push_str(family);
    name.push_str("_total");
    sink.family(&name, help, Type::Counter);
}

/// The textfile collector's families, each file's mtime and node_textfile_scrape_error;
/// a family that reuses one of our names is left out and counts as an error. Without a
/// directory configured only node_textfile_scrape_error (0) is written, which the
/// node-mixin's alert reads.
pub(super) fn textfile(live: &LiveSample, mut names: Names<'_>) {
    let mut error = false;
    if let Some(collected) = &live.textfile {
        error = collected.error;
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(8);
        for family in &collected.families {
            match family.kind {
                Kind::Counter | Kind::Gauge | Kind::Untyped => {
                    if names.has(&family.name) {
                        error = true;
                        continue;
                    }
                    let kind = match family.kind {
                        Kind::Counter => Type::Counter,
                        Kind::Gauge => Type::Gauge,
                        _ => Type::Untyped,
                    };
                    names.family(&family.name, &family.help, kind);
                    for s in &family.samples {
                        labels.clear();
                        labels.extend(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                        names.sample("", &labels, s.value);
                    }
                }
                // Histograms and summaries as untyped series under their own names: the
                // same series Prometheus stores, without the type metadata.
                Kind::Histogram | Kind::Summary => {
                    for suffix in ["", "_bucket", "_sum", "_count"] {
                        let samples: Vec<_> = family
                            .samples
                            .iter()
                            .filter(|s| s.suffix == suffix)
                            .collect();
                        if samples.is_empty() {
                            continue;
                        }
                        let name = format!("{}{suffix}", family.name);
                        if names.has(&name) {
                            error = true;
                            continue;
                        }
                        names.family(&name, &family.help, Type::Untyped);
                        for s in samples {
                            labels.clear();
                            labels.extend(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                            names.sample("", &labels, s.value);
                        }
                    }
                }
            }
        }
        if !collected.mtimes.is_empty() {
            names.family(
                "node_textfile_mtime_seconds",
                "Unixtime mtime of textfiles successfully read.",
                Type::Gauge,
            );
            for (file, mtime) in &collected.mtimes {
                names.sample("", &[("file", file)], *mtime);
            }
        }
    }
    single(
        &mut names,
        "node_textfile_scrape_error",
        "1 if there was an error opening or reading a file, 0 otherwise",
        Type::Gauge,
        f64::from(u8::from(error)),
    );
}
