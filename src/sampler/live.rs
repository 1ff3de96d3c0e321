//! What a scrape (and a push) reads at the moment it is made, as node_exporter reads at
//! each scrape: so a counter is as of the scrape, and `rate()` over it never runs ahead of
//! the hardware (serving the sampler's last sample, up to `sample_interval` old, stamped
//! with the scrape's time, gave rate(node_cpu_seconds_total) up to 7% over the CPU count).
//!
//! Only kernel counters and small /proc files are read here: they are made from kernel
//! memory at the read and never wait on a device, so they are read inline, in tens of
//! microseconds (BENCHMARKS.md has the cost of a whole scrape). What can block or is slow
//! stays where it was or is cached: statfs in the sampler's workers (sampler/filesystems.rs),
//! sensors in the sampler, the ~20 sysfs files an interface of netclass and the udev
//! properties of disks at most every [`SLOW_TTL`], and textfiles until they change. Health
//! still judges the sampler's snapshot, never this.
//!
//! Each source is timed and its success kept, for node_scrape_collector_duration_seconds
//! and node_scrape_collector_success; a source that cannot be read is left out and its
//! collector reported failed, as node_exporter does.

use std::{
    fs,
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use regex_lite::Regex;

use super::{
    clock::{self, Clocksource, Timex},
    disk::{self, Disk},
    net::{self, Conntrack, FieldFilter, NetDev},
    netclass::{self, NetClass},
    node,
    textfile::{self, Textfile},
};
use crate::proto::metrics::{CpuTime, KernelStat, MemInfoField, Pressure};

/// How long the slow-changing sysfs sources (netclass, clocksources, udev disk
/// properties) are served again before they are read anew.
pub const SLOW_TTL: Duration = Duration::from_secs(10);

/// What the live reader is told by the config.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub disk_devices_exclude: Option<Regex>,
    pub network_devices_exclude: Option<Regex>,
    pub textfile_directory: Option<PathBuf>,
}

/// (IPv4, IPv6) UDP queue bytes, each (tx, rx); `None` where the file is missing.
pub type UdpQueues = (Option<(f64, f64)>, Option<(f64, f64)>);

/// One read of every live source; what could not be read is empty.
#[derive(Debug, Default)]
pub struct LiveSample {
    pub read_at: Option<SystemTime>,
    pub cpu_times: Vec<CpuTime>,
    pub kernel: Option<KernelStat>,
    pub load: Option<[f64; 3]>,
    pub meminfo: Vec<MemInfoField>,
    pub pressure: Option<Pressure>,
    pub process_cpu_seconds: Option<f64>,
    /// Each disk with node_disk_info's udev labels.
    pub disks: Vec<(Disk, Arc<disk::Info>)>,
    pub vmstat: Vec<(String, f64)>,
    pub netdev: Vec<NetDev>,
    pub netstat: Vec<(String, f64)>,
    pub sockstat: Vec<(String, f64)>,
    pub softnet: Vec<[u64; 3]>,
    pub arp: Vec<(String, u64)>,
    pub udp_queues: UdpQueues,
    pub filefd: Option<[f64; 3]>,
    /// The address space limit (`ulimit -v`; unlimited as 2^64), read once.
    pub virtual_memory_max_bytes: Option<f64>,
    /// Whether SELinux is enabled, looked at once.
    pub selinux_enabled: bool,
    pub conntrack: Conntrack,
    pub entropy: Option<(f64, f64)>,
    pub timex: Option<Timex>,
    pub time_zone: Option<(String, i64)>,
    pub clocksources: Arc<Vec<Clocksource>>,
    pub netclass: Arc<Vec<NetClass>>,
    pub textfile: Option<Arc<textfile::Collected>>,
    /// (collector, seconds it took, succeeded), in node_exporter's collector names.
    pub collectors: Vec<(&'static str, f64, bool)>,
}

/// The live reader: its buffers, caches and field filters; one per daemon, shared by the
/// scrape and the push behind a mutex.
pub struct Live {
    settings: Settings,
    buf: String,
    /// The files read at every scrape, kept open: a /proc file read again from offset 0
    /// is made anew, and the open (path walk, allocation) was a tenth of a scrape.
    open: Vec<(&'static str, fs::File)>,
    /// What a file is read into before it is checked as UTF-8 and copied to `buf`.
    scratch: Vec<u8>,
    vmstat: FieldFilter,
    netstat: FieldFilter,
    /// The same fields' filter for /proc/net/snmp6, numbered on its own.
    netstat6: FieldFilter,
    /// The exclusions of disks and interfaces, their verdicts cached by line.
    disk_exclude: Option<FieldFilter>,
    netdev_exclude: Option<FieldFilter>,
    page_size: u64,
    /// The slow sources as last read, and when.
    slow: (Option<Instant>, Slow),
    /// The entropy pool's size, which does not change.
    pool_size: Option<f64>,
    textfile: Textfile,
    virtual_memory_max_bytes: Option<f64>,
    selinux_enabled: bool,
}

/// What [`Live::read_slow`] read last.
#[derive(Debug, Default)]
struct Slow {
    sockstat: Vec<(String, f64)>,
    arp: Vec<(String, u64)>,
    udp_queues: UdpQueues,
    filefd: Option<[f64; 3]>,
    conntrack: Conntrack,
    entropy: Option<(f64, f64)>,
    clocksources: Arc<Vec<Clocksource>>,
    netclass: Arc<Vec<NetClass>>,
    nohandler: Vec<(String, u64)>,
    netstat6: Vec<(String, f64)>,
    /// (major, minor, udev properties) of each disk.
    disk_info: Vec<(String, String, Arc<disk::Info>)>,
    collectors: Vec<(&'static str, f64, bool)>,
}

/// Records how long a collector took since `start` and whether it succeeded.
fn timed(
    collectors: &mut Vec<(&'static str, f64, bool)>,
    name: &'static str,
    start: Instant,
    ok: bool,
) {
    collectors.push((name, start.elapsed().as_secs_f64(), ok));
}

impl Live {
    pub fn new(settings: Settings) -> Live {
        // The defaults are node_exporter's and compile; a failure would be a bug here.
        let filter = |pattern: &str| {
            FieldFilter::new(Regex::new(pattern).unwrap_or_else(|_| Regex::new("$^").unwrap()))
        };
        Live {
            textfile: Textfile::new(settings.textfile_directory.clone()),
            buf: String::with_capacity(16 << 10),
            open: Vec::new(),
            scratch: Vec::new(),
            vmstat: filter(node::VMSTAT_FIELDS),
            netstat: filter(net::NETSTAT_FIELDS),
            netstat6: filter(net::NETSTAT_FIELDS),
            disk_exclude: settings.disk_devices_exclude.clone().map(FieldFilter::new),
            netdev_exclude: settings
                .network_devices_exclude
                .clone()
                .map(FieldFilter::new),
            settings,
            page_size: page_size().unwrap_or(4096),
            slow: (None, Slow::default()),
            pool_size: None,
            virtual_memory_max_bytes: fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|l| address_space_limit(&l)),
            selinux_enabled: Path::new("/sys/fs/selinux/enforce").exists(),
        }
    }

    /// Every live source: the counters read now, the slow sources as last read (at most
    /// [`SLOW_TTL`] ago).
    pub fn read(&mut self) -> LiveSample {
        let mut out = LiveSample {
            read_at: Some(SystemTime::now()),
            ..LiveSample::default()
        };
        let now = Instant::now();
        if self.slow.0.is_none_or(|at| now - at >= SLOW_TTL) {
            let mut slow = std::mem::take(&mut self.slow.1);
            self.read_slow(&mut slow);
            self.slow = (Some(now), slow);
        }
        self.read_counters(&mut out);
        let slow = &self.slow.1;
        out.sockstat.clone_from(&slow.sockstat);
        out.arp.clone_from(&slow.arp);
        out.udp_queues = slow.udp_queues;
        out.filefd = slow.filefd;
        out.conntrack.clone_from(&slow.conntrack);
        out.entropy = slow.entropy;
        out.clocksources = slow.clocksources.clone();
        out.netclass = slow.netclass.clone();
        out.netstat.extend(slow.netstat6.iter().cloned());
        for dev in &mut out.netdev {
            dev.nohandler = slow
                .nohandler
                .iter()
                .find(|(d, _)| *d == dev.device)
                .map(|(_, n)| *n);
        }
        out.virtual_memory_max_bytes = self.virtual_memory_max_bytes;
        out.selinux_enabled = self.selinux_enabled;
        out.collectors.extend(slow.collectors.iter().copied());

        let t = Instant::now();
        out.textfile = self.textfile.read();
        if out.textfile.is_some() {
            let ok = out.textfile.as_ref().is_some_and(|c| !c.error);
            timed(&mut out.collectors, "textfile", t, ok);
        }
        out
    }

    /// The counters (and the few gauges the dashboards chart from the same files), read
    /// at every scrape.
    fn read_counters(&mut self, out: &mut LiveSample) {
        let t = Instant::now();
        let ok = self.kept("/proc/stat");
        if ok {
            let (cpus, kernel) = node::parse_stat(&self.buf);
            out.cpu_times = cpus;
            out.kernel = Some(kernel);
        }
        timed(&mut out.collectors, "cpu", t, ok);
        timed(&mut out.collectors, "stat", t, ok);

        let t = Instant::now();
        out.load = self
            .kept("/proc/loadavg")
            .then(|| node::numbers::<3>(&self.buf))
            .flatten();
        timed(&mut out.collectors, "loadavg", t, out.load.is_some());

        let t = Instant::now();
        if self.kept("/proc/meminfo") {
            out.meminfo = node::parse_meminfo(&self.buf);
        }
        timed(&mut out.collectors, "meminfo", t, !out.meminfo.is_empty());

        let t = Instant::now();
        out.pressure = self.pressure();
        timed(&mut out.collectors, "pressure", t, out.pressure.is_some());

        if self.kept("/proc/self/stat") {
            out.process_cpu_seconds = node::process_cpu_seconds(&self.buf);
        }

        let t = Instant::now();
        let ok = self.kept("/proc/diskstats");
        if ok {
            let disks = disk::parse(&self.buf, self.disk_exclude.as_mut());
            out.disks = disks
                .into_iter()
                .map(|d| {
                    let info = self
                        .slow
                        .1
                        .disk_info
                        .iter()
                        .find(|(major, minor, _)| *major == d.major && *minor == d.minor)
                        .map(|(.., i)| i.clone())
                        .unwrap_or_default();
                    (d, info)
                })
                .collect();
        }
        timed(&mut out.collectors, "diskstats", t, ok);

        let t = Instant::now();
        let ok = self.kept("/proc/vmstat");
        if ok {
            node::parse_vmstat(&self.buf, &mut self.vmstat, &mut out.vmstat);
        }
        timed(&mut out.collectors, "vmstat", t, ok);

        let t = Instant::now();
        let ok = self.kept("/proc/net/dev");
        if ok {
            out.netdev = net::parse_netdev(&self.buf, self.netdev_exclude.as_mut());
        }
        timed(&mut out.collectors, "netdev", t, ok);

        let t = Instant::now();
        let mut offset = 0;
        let mut ok = false;
        for file in ["/proc/net/netstat", "/proc/net/snmp"] {
            if self.kept(file) {
                ok = true;
                net::parse_netstat(&self.buf, &mut self.netstat, &mut offset, &mut out.netstat);
            }
        }
        timed(&mut out.collectors, "netstat", t, ok);

        let t = Instant::now();
        let ok = self.kept("/proc/net/softnet_stat");
        if ok {
            out.softnet = net::parse_softnet(&self.buf);
        }
        timed(&mut out.collectors, "softnet", t, ok);

        let t = Instant::now();
        let timex = clock::timex();
        out.timex = timex.as_ref().ok().copied();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        out.time_zone = clock::time_zone(unix);
        timed(&mut out.collectors, "timex", t, timex.is_ok());
    }

    /// The gauges and rarely-moving sources, read at most every [`SLOW_TTL`]: sockstat,
    /// arp, UDP queues, filefd, conntrack, entropy, the clocksources, netclass's sysfs
    /// files, udev's disk properties, the IPv6 netstat counters (snmp6, which no dashboard
    /// panel or mixin rule reads) and rx_nohandler.
    fn read_slow(&mut self, slow: &mut Slow) {
        slow.collectors.clear();
        let t = Instant::now();
        slow.sockstat.clear();
        let ok = self.file("/proc/net/sockstat");
        if ok {
            net::parse_sockstat(&self.buf, self.page_size, &mut slow.sockstat);
        }
        if self.file("/proc/net/sockstat6") {
            net::parse_sockstat(&self.buf, self.page_size, &mut slow.sockstat);
        }
        timed(&mut slow.collectors, "sockstat", t, ok);

        let t = Instant::now();
        let ok = self.file("/proc/net/arp");
        slow.arp = if ok {
            net::parse_arp(&self.buf, self.settings.network_devices_exclude.as_ref())
        } else {
            Vec::new()
        };
        timed(&mut slow.collectors, "arp", t, ok);

        let t = Instant::now();
        let udp = |live: &mut Live, file: &str| {
            live.file(file)
                .then(|| net::parse_udp_queues(&live.buf))
                .flatten()
        };
        slow.udp_queues = (udp(self, "/proc/net/udp"), udp(self, "/proc/net/udp6"));
        timed(
            &mut slow.collectors,
            "udp_queues",
            t,
            slow.udp_queues.0.is_some(),
        );

        let t = Instant::now();
        slow.filefd = self
            .file("/proc/sys/fs/file-nr")
            .then(|| node::numbers::<3>(&self.buf))
            .flatten();
        timed(&mut slow.collectors, "filefd", t, slow.filefd.is_some());

        let t = Instant::now();
        let number = |live: &mut Live, path: &str| {
            live.file(path)
                .then(|| node::numbers::<1>(&live.buf))
                .flatten()
                .map(|[n]| n)
        };
        slow.conntrack.entries = number(self, "/proc/sys/net/netfilter/nf_conntrack_count");
        slow.conntrack.limit = number(self, "/proc/sys/net/netfilter/nf_conntrack_max");
        slow.conntrack.stats = if self.file("/proc/net/stat/nf_conntrack") {
            net::parse_conntrack_stat(&self.buf)
        } else {
            None
        };
        // As node_exporter: no conntrack module is "not applicable", not a failure.
        timed(
            &mut slow.collectors,
            "conntrack",
            t,
            slow.conntrack.entries.is_some(),
        );

        let t = Instant::now();
        let avail = number(self, "/proc/sys/kernel/random/entropy_avail");
        if self.pool_size.is_none() {
            self.pool_size = number(self, "/proc/sys/kernel/random/poolsize");
        }
        slow.entropy = avail.zip(self.pool_size);
        timed(&mut slow.collectors, "entropy", t, slow.entropy.is_some());

        let t = Instant::now();
        slow.clocksources = Arc::new(clock::clocksources(Path::new(
            "/sys/devices/system/clocksource",
        )));
        timed(
            &mut slow.collectors,
            "time",
            t,
            !slow.clocksources.is_empty(),
        );

        let t = Instant::now();
        slow.netclass = Arc::new(netclass::read(
            Path::new("/sys/class/net"),
            self.settings.network_devices_exclude.as_ref(),
        ));
        slow.nohandler = slow
            .netclass
            .iter()
            .filter_map(|c| {
                let path = format!("/sys/class/net/{}/statistics/rx_nohandler", c.device);
                let n = fs::read_to_string(path).ok()?.trim().parse().ok()?;
                Some((c.device.clone(), n))
            })
            .collect();
        timed(
            &mut slow.collectors,
            "netclass",
            t,
            !slow.netclass.is_empty(),
        );

        slow.netstat6.clear();
        if self.file("/proc/net/snmp6") {
            let mut offset = 0;
            net::parse_snmp6(
                &self.buf,
                &mut self.netstat6,
                &mut offset,
                &mut slow.netstat6,
            );
        }

        if self.file("/proc/diskstats") {
            slow.disk_info = disk::parse(&self.buf, self.disk_exclude.as_mut())
                .into_iter()
                .map(|d| {
                    let info = Arc::new(disk::info(&d.major, &d.minor));
                    (d.major, d.minor, info)
                })
                .collect();
        }
    }

    /// Reads `path` into the buffer; false when it cannot be read.
    fn file(&mut self, path: &str) -> bool {
        let read =
            fs::File::open(path).and_then(|mut f| read_from_start(&mut f, &mut self.scratch));
        self.set_buf(read)
    }

    /// [`Live::file`] for the files read at every scrape: kept open and read again from
    /// the start next time; one that fails is opened anew once.
    fn kept(&mut self, path: &'static str) -> bool {
        let kept = self.open.iter().position(|(p, _)| *p == path);
        let mut read = match kept {
            Some(i) => read_from_start(&mut self.open[i].1, &mut self.scratch),
            None => Err(io::ErrorKind::NotFound.into()),
        };
        if read.is_err() {
            if let Some(i) = kept {
                self.open.swap_remove(i);
            }
            read = fs::File::open(path).and_then(|mut f| {
                let n = read_from_start(&mut f, &mut self.scratch)?;
                self.open.push((path, f));
                Ok(n)
            });
        }
        self.set_buf(read)
    }

    /// Makes the first `n` bytes of the scratch buffer the text buffer if they were read
    /// whole and are UTF-8; else leaves it empty and says false.
    fn set_buf(&mut self, read: io::Result<usize>) -> bool {
        self.buf.clear();
        match read.map(|n| std::str::from_utf8(&self.scratch[..n])) {
            Ok(Ok(text)) => {
                self.buf.push_str(text);
                true
            }
            _ => false,
        }
    }

    fn pressure(&mut self) -> Option<Pressure> {
        node::pressure(|file| {
            if self.kept(file) {
                node::parse_pressure(&self.buf)
            } else {
                None
            }
        })
    }
}

/// Reads `f` whole from offset 0 into `scratch` (grown, zeroed, when too small; never
/// shrunk), saying how many bytes; without the fstat and lseek that `read_to_end` spends
/// on a size hint (a /proc file says 0) or zeroing its spare capacity at each read.
fn read_from_start(f: &mut fs::File, scratch: &mut Vec<u8>) -> io::Result<usize> {
    f.seek(SeekFrom::Start(0))?;
    let mut filled = 0;
    loop {
        if filled == scratch.len() {
            scratch.resize((scratch.len() * 2).max(16 << 10), 0);
        }
        match f.read(&mut scratch[filled..]) {
            Ok(0) => return Ok(filled),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `Max address space`'s soft limit in a /proc/self/limits text, in bytes; unlimited as
/// 2^64 (what the Go client reports).
fn address_space_limit(limits: &str) -> Option<f64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    let soft = line["Max address space".len()..]
        .split_ascii_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX as f64),
        n => n.parse().ok(),
    }
}

/// The kernel's page size, from the auxiliary vector (AT_PAGESZ): 4 KiB on most ARM boards,
/// 16 KiB on some (the Raspberry Pi 5's kernel), so not assumed.
fn page_size() -> Option<u64> {
    let mut auxv = Vec::new();
    fs::File::open("/proc/self/auxv")
        .and_then(|mut f| f.read_to_end(&mut auxv))
        .ok()?;
    parse_page_size(&auxv)
}

/// AT_PAGESZ's value in an auxiliary vector: native-endian (key, value) word pairs.
fn parse_page_size(auxv: &[u8]) -> Option<u64> {
    const AT_PAGESZ: u64 = 6;
    let word = size_of::<usize>();
    auxv.chunks_exact(word * 2).find_map(|pair| {
        let read = |bytes: &[u8]| {
            let mut buf = [0u8; 8];
            buf[..word].copy_from_slice(bytes);
            if cfg!(target_endian = "big") {
                u64::from_be_bytes(buf) >> (64 - 8 * word)
            } else {
                u64::from_le_bytes(buf)
            }
        };
        (read(&pair[..word]) == AT_PAGESZ).then(|| read(&pair[word..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One live read of this machine has the CPU times, the kernel counters, a load, memory,
    /// the loopback interface, netstat and sockstat values, the clock, a page size, and a
    /// timing for each collector; a second read gives counters that did not go back.
    #[test]
    fn reads_this_machine() {
        let mut live = Live::new(Settings::default());
        let first = live.read();
        assert!(!first.cpu_times.is_empty());
        assert!(first.kernel.is_some() && first.load.is_some());
        assert!(first.meminfo.iter().any(|m| m.name == "MemTotal"));
        assert!(
            first.netdev.iter().any(|d| d.device == "lo"),
            "{:?}",
            first.netdev
        );
        assert!(first.netstat.iter().any(|(k, _)| k == "Tcp_CurrEstab"));
        assert!(first.sockstat.iter().any(|(k, _)| k == "sockets_used"));
        assert!(first.filefd.is_some() && first.timex.is_some());
        assert!(first.process_cpu_seconds.is_some());
        assert!(first.collectors.iter().any(|(n, _, ok)| *n == "cpu" && *ok));
        assert!(live.page_size >= 4096 && live.page_size.is_power_of_two());
        let second = live.read();
        let idle = |s: &LiveSample| s.cpu_times.iter().map(|c| c.idle).sum::<f64>();
        assert!(idle(&second) >= idle(&first));
    }

    /// A kept file is read again from its start, whole, however long: what it holds at
    /// the second read, not the first, through one descriptor; a missing file is reported
    /// unread with an empty buffer. Live reads keep a descriptor per file read at each
    /// scrape, no more, and the IPv6 netstat names (numbered on their own) leave the
    /// filters' caches small (they once made a 65,536-entry one: 2 MiB).
    #[test]
    fn kept_files_are_read_anew() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path: &'static str = Box::leak(
            dir.path()
                .join("f")
                .to_string_lossy()
                .into_owned()
                .into_boxed_str(),
        );
        let mut live = Live::new(Settings::default());
        fs::write(path, "first").unwrap();
        assert!(live.kept(path) && live.buf == "first");
        let long = "x".repeat(100_000);
        // Written in place, so the open descriptor sees it.
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .write_all(long.as_bytes())
            .unwrap();
        assert!(live.kept(path) && live.buf == long);
        assert_eq!(live.open.len(), 1);
        assert!(!live.file(&format!("{path}.missing")));
        assert!(live.buf.is_empty());

        for _ in 0..3 {
            live.read();
        }
        assert!(live.open.len() <= 16, "{}", live.open.len());
        assert!(live.netstat.seen_len() < 1024 && live.netstat6.seen_len() < 1024);
    }

    /// AT_PAGESZ is found among the auxiliary vector's pairs.
    #[test]
    fn page_size_from_auxv() {
        let word = size_of::<usize>();
        let mut auxv = Vec::new();
        for (k, v) in [(3u64, 0x400040u64), (6, 16384), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes()[..word]);
            auxv.extend_from_slice(&v.to_ne_bytes()[..word]);
        }
        assert_eq!(parse_page_size(&auxv), Some(16384));
        assert_eq!(parse_page_size(&auxv[..word * 2]), None);
    }
}
