//! The daemon's one sampler: it owns the `sysinfo` state (`System`, `Components`), the
//! filesystem collector, the daemon's own pid and what the previous sample left behind (its
//! time, the process CPU time, the interface counters), and turns a selective refresh into the
//! device part of a metrics [`Snapshot`].
//!
//! It never scans the process table: walking every `/proc/<pid>` costs milliseconds on a busy
//! device and the metrics only describe the daemon itself, so the only process it refreshes is
//! its own pid, and only the fields it reports (memory, CPU time). What rarely changes (mounts,
//! sensors, the hostname, which cgroup limits memory) is re-read every 12th sample; the other
//! samples only refresh values. Interface counters come from one read of /proc/net/dev rather
//! than sysinfo's `Networks`, which opens nine sysfs files per interface and asks for every
//! address on each refresh. Filesystems come from `filesystems.rs`: statvfs per mount under a
//! deadline, so a hung network or FUSE mount is reported stuck instead of stopping the sampler.
//!
//! [`Sampler::spawn`] runs the sampler on its own OS thread and publishes through a tokio watch
//! channel, so RPC handlers read the latest snapshot and never touch /proc themselves. A
//! collector that fails logs once at warn (then at debug) and is skipped; the rest still report.

use std::fmt::Display;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sysinfo::{
    Components, CpuRefreshKind, MINIMUM_CPU_UPDATE_INTERVAL, MemoryRefreshKind, Pid,
    ProcessRefreshKind, ProcessesToUpdate, System,
};
use tokio::sync::watch;
use tracing::{debug, error, warn};

use crate::proto::metrics::{
    CgroupMemory, Cpu, CpuCore, Host, Memory, NetworkInterface, OsRelease, Process, Snapshot,
    Temperature, Uname,
};

pub mod clock;
pub mod disk;
mod filesystems;
pub mod live;
pub mod net;
pub mod netclass;
mod node;
pub mod textfile;

use filesystems::Filesystems;
pub use filesystems::{MAX_HUNG, Selection, WORKER_ARG, worker_main};
pub use live::{Live, LiveSample};

/// How long a filesystem may take to answer statfs when the config does not say.
pub const DEFAULT_FILESYSTEM_TIMEOUT: Duration = Duration::from_secs(1);

/// What the sampler publishes: the device part of a metrics snapshot (`rpc` left empty).
pub type Published = Arc<Snapshot>;

/// Every this many samples the lists (mounts, sensors, hostname, cgroup) are re-read.
const RELIST_EVERY: u64 = 12;

/// How long [`Sampler::spawn`] waits for the first sample before returning an empty one.
/// How long a reader may wait for the sampler's first sample after startup.
pub const FIRST_SAMPLE_WAIT: Duration = Duration::from_secs(1);

/// Limits at or above this many bytes (4 EiB) mean "no limit" (cgroup v1 writes
/// `PAGE_COUNTER_MAX`, about 8 EiB, rather than `max`).
const UNLIMITED: u64 = 1 << 62;

/// Samples the device and the daemon's own process; see the module docs.
pub struct Sampler {
    system: Option<System>,
    /// Mounts and their sizes, each read under a deadline.
    filesystems: Filesystems,
    components: Option<Components>,
    pid: Pid,
    /// Whether per-core frequency comes from cpufreq in sysfs (one small read per core). Without
    /// it sysinfo parses /proc/cpuinfo once per core, so the frequency is only re-read at relist.
    cpufreq: bool,
    /// Host fields that do not change between samples (uptime is filled per sample).
    host: Host,
    cgroup: CgroupSource,
    /// The daemon's cgroup swap limit, 0 when unlimited or unknown; re-read at relist.
    cgroup_swap_limit: u64,
    /// When `new` first read the CPU times: a usage figure needs a second read 200 ms later.
    cpu_refreshed_at: Instant,
    previous_sample_at: Instant,
    /// The daemon's accumulated CPU time (ms) at the previous sample.
    previous_process_cpu_ms: Option<u64>,
    /// Interface byte counters (name, rx, tx) at the previous sample, for the rates.
    previous_network_bytes: Vec<(String, u64, u64)>,
    samples: u64,
    /// Reused buffers for /proc/self/status and /proc/net/dev.
    status: String,
    net_dev: String,
    failures: Failures,
    /// node_exporter's sources beyond sysinfo (node.rs).
    node: node::Node,
    uname: Uname,
    os_release: OsRelease,
    max_fds: u64,
}

/// Where the daemon's memory cgroup limits come from, decided at construction and relist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CgroupSource {
    /// No limited memory cgroup was found: nothing is read per sample.
    None,
    /// The daemon's own cgroup (e.g. a systemd unit with `MemoryMax=`).
    Process,
    /// The cgroup root as seen by the daemon (e.g. a container with a memory limit).
    System,
}

impl Sampler {
    /// Builds the sysinfo state with the lists it needs (no process-table scan).
    pub fn new() -> Sampler {
        Sampler::with_filesystem_timeout(DEFAULT_FILESYSTEM_TIMEOUT)
    }

    /// The same, with each filesystem's statfs bounded by `filesystem_timeout`.
    pub fn with_filesystem_timeout(filesystem_timeout: Duration) -> Sampler {
        Sampler::with_filesystems(filesystem_timeout, Selection::default())
    }

    /// The same, reading the mounts `selection` keeps.
    pub fn with_filesystems(filesystem_timeout: Duration, selection: Selection) -> Sampler {
        let mut failures = Failures::default();
        // CPU times first, so the 200 ms sysinfo needs before a usage figure run while the rest
        // is listed.
        let mut system = failures.check(Collector::System, System::new());
        if let Some(system) = &mut system {
            system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage().with_frequency());
        }
        let cpu_refreshed_at = Instant::now();
        let cpufreq = Path::new("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq").exists();

        let mut filesystems = Filesystems::with_selection(filesystem_timeout, selection);
        failures.check(Collector::Disks, filesystems.relist());
        let components =
            failures.check(Collector::Components, Components::new_with_refreshed_list());

        let host = Host {
            hostname: failures
                .check(Collector::Hostname, System::host_name())
                .unwrap_or_default(),
            kernel_version: failures
                .check(Collector::KernelVersion, System::kernel_version())
                .unwrap_or_default(),
            os: failures
                .check(Collector::Os, System::long_os_version())
                .unwrap_or_default(),
            arch: System::cpu_arch(),
            uptime_secs: 0,
            boot_time_unix_secs: failures
                .check(Collector::BootTime, System::boot_time())
                .unwrap_or_default(),
        };

        let mut sampler = Sampler {
            system,
            filesystems,
            components,
            pid: Pid::from_u32(std::process::id()),
            cpufreq,
            host,
            cgroup: CgroupSource::None,
            cgroup_swap_limit: 0,
            cpu_refreshed_at,
            previous_sample_at: Instant::now(),
            previous_process_cpu_ms: None,
            previous_network_bytes: Vec::new(),
            samples: 0,
            status: String::with_capacity(2048),
            net_dev: String::with_capacity(2048),
            failures,
            node: node::Node::new(),
            uname: node::uname(&System::cpu_arch()),
            os_release: node::os_release(),
            max_fds: node::max_fds(),
        };
        // The first process refresh gives the CPU time the first sample's CPU% is measured from.
        if let Some(process) = sampler.refresh_process() {
            sampler.previous_process_cpu_ms = Some(process.accumulated_cpu_time());
        }
        sampler.probe_cgroup();
        // The first interface counters, which the first sample's rates are measured from.
        let _ = sampler.networks(Duration::ZERO);
        sampler.previous_sample_at = Instant::now();
        sampler
    }

    /// Refreshes selectively and returns a fresh snapshot. `elapsed` since the previous call is computed inside.
    pub fn sample(&mut self) -> Snapshot {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.previous_sample_at);
        self.previous_sample_at = now;
        self.samples += 1;
        let relist = self.samples.is_multiple_of(RELIST_EVERY);
        if relist {
            self.relist();
        }

        let cpu = self.cpu(relist);
        let process = self.process(elapsed);
        let memory = self.memory();
        if relist {
            self.node.relist();
        }
        let node = self.node.sample();
        Snapshot {
            sampled_at_unix_ms: unix_millis(SystemTime::now()),
            host: Some(self.host()),
            cpu,
            memory,
            filesystems: self.filesystems(relist),
            networks: self.networks(elapsed),
            temperatures: self.temperatures(relist),
            process: Some(process),
            rpc: Vec::new(),
            health_checks: Vec::new(),
            cpu_times: node.cpu_times,
            kernel: node.kernel,
            meminfo: node.meminfo,
            pressure: node.pressure,
            hwmon: node.hwmon,
            thermal_zones: node.thermal_zones,
            uname: Some(self.uname.clone()),
            os_release: Some(self.os_release.clone()),
            server: None,
        }
    }

    /// Starts a dedicated OS thread (named "vitals-sampler") that samples and publishes each
    /// sample through a tokio watch channel. The thread ends when every receiver is dropped.
    ///
    /// Returns at once, with an empty `Snapshot` (`sampled_at_unix_ms == 0`) as the current
    /// value. The first sample follows as soon as it is taken, without CPU usage (`cpu` is
    /// absent: sysinfo needs two CPU reads 200 ms apart for a usage figure), so health can
    /// judge the device on a real sample before the daemon says READY; the second, with CPU
    /// usage, about 200 ms later; then one every `interval`, raised to
    /// [`MINIMUM_CPU_UPDATE_INTERVAL`] when shorter. Each filesystem's statfs is bounded by
    /// `filesystem_timeout`. The thread notices that every receiver is gone at its next tick.
    pub fn spawn(interval: Duration, filesystem_timeout: Duration) -> watch::Receiver<Published> {
        Sampler::spawn_selecting(interval, filesystem_timeout, Selection::default(), None)
    }

    /// The same, reading the filesystems `selection` keeps; the watched paths follow
    /// `disk_paths` when given (a reload changes them).
    pub fn spawn_selecting(
        interval: Duration,
        filesystem_timeout: Duration,
        selection: Selection,
        disk_paths: Option<watch::Receiver<Vec<std::path::PathBuf>>>,
    ) -> watch::Receiver<Published> {
        let interval = interval.max(MINIMUM_CPU_UPDATE_INTERVAL);
        let (tx, rx) = watch::channel(Published::default());
        let spawned = thread::Builder::new()
            .name("vitals-sampler".to_owned())
            .spawn(move || {
                crate::supervise::thread("sampler", || {
                    let (selection, disk_paths) = (selection.clone(), disk_paths.clone());
                    run(&tx, interval, filesystem_timeout, selection, disk_paths)
                })
            });
        if let Err(e) = spawned {
            error!("starting the sampler thread: {e}; metrics stay empty");
        }
        rx
    }

    /// How long until a CPU refresh yields a usage figure.
    fn cpu_ready_in(&self) -> Duration {
        MINIMUM_CPU_UPDATE_INTERVAL.saturating_sub(self.cpu_refreshed_at.elapsed())
    }

    /// Re-reads what rarely changes; the collectors re-list mounts and sensors themselves.
    fn relist(&mut self) {
        if let Some(hostname) = self
            .failures
            .check(Collector::Hostname, System::host_name())
        {
            self.host.hostname = hostname;
        }
        self.probe_cgroup();
    }

    fn host(&mut self) -> Host {
        let uptime_secs = self
            .failures
            .check(Collector::Uptime, System::uptime())
            .unwrap_or_default();
        Host {
            uptime_secs,
            ..self.host.clone()
        }
    }

    fn cpu(&mut self, relist: bool) -> Option<Cpu> {
        let system = self.system.as_mut()?;
        let mut kind = CpuRefreshKind::nothing().with_usage();
        if self.cpufreq || relist {
            kind = kind.with_frequency();
        }
        // sysinfo skips the /proc/stat read when the last one is under 200 ms old, and then
        // keeps reporting the usage it computed last.
        system.refresh_cpu_specifics(kind);
        let load = self
            .failures
            .check(Collector::LoadAverage, System::load_average())
            .unwrap_or_default();
        Some(Cpu {
            usage_percent: system.global_cpu_usage(),
            cores: system
                .cpus()
                .iter()
                .map(|cpu| CpuCore {
                    name: cpu.name().to_owned(),
                    usage_percent: cpu.usage(),
                    frequency_mhz: cpu.frequency(),
                })
                .collect(),
            load_1: load.one,
            load_5: load.five,
            load_15: load.fifteen,
        })
    }

    fn memory(&mut self) -> Option<Memory> {
        let system = self.system.as_mut()?;
        system.refresh_memory_specifics(MemoryRefreshKind::everything());
        let limits = match self.cgroup {
            CgroupSource::None => None,
            CgroupSource::Process => system.process(self.pid).and_then(|p| p.cgroup_limits()),
            CgroupSource::System => system.cgroup_limits(),
        };
        Some(Memory {
            total_bytes: system.total_memory(),
            available_bytes: system.available_memory(),
            used_bytes: system.used_memory(),
            swap_total_bytes: system.total_swap(),
            swap_used_bytes: system.used_swap(),
            cgroup: limits.map(|limits| CgroupMemory {
                limit_bytes: limits.total_memory,
                used_bytes: limits.total_memory.saturating_sub(limits.free_memory),
                swap_limit_bytes: self.cgroup_swap_limit,
            }),
        })
    }

    /// Decides where cgroup limits come from: the daemon's own cgroup first, then the root the
    /// daemon sees; neither when no memory limit applies, so samples then read nothing.
    fn probe_cgroup(&mut self) {
        let Some(system) = &self.system else {
            return;
        };
        self.cgroup = if system
            .process(self.pid)
            .and_then(|p| p.cgroup_limits())
            .is_some()
        {
            CgroupSource::Process
        } else if system.cgroup_limits().is_some() {
            CgroupSource::System
        } else {
            CgroupSource::None
        };
        self.cgroup_swap_limit = match self.cgroup {
            CgroupSource::None => 0,
            CgroupSource::Process | CgroupSource::System => read_cgroup_swap_limit(),
        };
    }

    fn filesystems(&mut self, relist: bool) -> Vec<crate::proto::metrics::Filesystem> {
        if relist {
            let listed = self.filesystems.relist();
            self.failures.check(Collector::Disks, listed);
        }
        self.filesystems.sample()
    }

    /// Every interface in the daemon's network namespace, in the kernel's order, with rates
    /// over `elapsed` (0 for an interface the previous sample did not see).
    fn networks(&mut self, elapsed: Duration) -> Vec<NetworkInterface> {
        self.net_dev.clear();
        let read = fs::File::open("/proc/net/dev")
            .and_then(|mut file| file.read_to_string(&mut self.net_dev))
            .map_err(|e| format!("reading /proc/net/dev: {e}"));
        if self.failures.check(Collector::Networks, read).is_none() {
            self.previous_network_bytes.clear();
            return Vec::new();
        }
        let previous = std::mem::take(&mut self.previous_network_bytes);
        let interfaces: Vec<NetworkInterface> = parse_net_dev(&self.net_dev)
            .map(|mut interface| {
                if let Some((_, rx, tx)) = previous.iter().find(|(n, ..)| *n == interface.name) {
                    interface.rx_bytes_per_sec = rate(*rx, interface.rx_bytes, elapsed);
                    interface.tx_bytes_per_sec = rate(*tx, interface.tx_bytes, elapsed);
                }
                interface
            })
            .collect();
        self.previous_network_bytes = interfaces
            .iter()
            .map(|i| (i.name.clone(), i.rx_bytes, i.tx_bytes))
            .collect();
        interfaces
    }

    fn temperatures(&mut self, relist: bool) -> Vec<Temperature> {
        let Some(components) = &mut self.components else {
            return Vec::new();
        };
        if relist {
            components.refresh(true);
        } else {
            for component in components.iter_mut() {
                component.refresh();
            }
        }
        components
            .iter()
            .map(|component| Temperature {
                label: component.label().to_owned(),
                celsius: celsius(component.temperature()),
                critical_celsius: celsius(component.critical()),
            })
            .collect()
    }

    /// Refreshes the daemon's own entry, and only it, with memory and CPU time.
    fn refresh_process(&mut self) -> Option<&sysinfo::Process> {
        let system = self.system.as_mut()?;
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing()
                .with_memory()
                .with_cpu()
                .without_tasks(),
        );
        let process = system.process(self.pid);
        if process.is_none() {
            self.failures.report(
                Collector::Process,
                &format_args!("/proc/{} could not be read", self.pid),
            );
        }
        process
    }

    fn process(&mut self, elapsed: Duration) -> Process {
        let mut out = Process {
            pid: self.pid.as_u32(),
            max_fds: self.max_fds,
            ..Process::default()
        };
        let mut cpu_ms = None;
        if let Some(process) = self.refresh_process() {
            out.rss_bytes = process.memory();
            out.virtual_bytes = process.virtual_memory();
            out.start_time_unix_secs = process.start_time();
            cpu_ms = Some(process.accumulated_cpu_time());
            out.cpu_time_millis = process.accumulated_cpu_time();
        }
        if let (Some(now), Some(before)) = (cpu_ms, self.previous_process_cpu_ms) {
            out.cpu_percent = cpu_percent(before, now, elapsed);
        }
        self.previous_process_cpu_ms = cpu_ms;

        if let Some(fds) = self.failures.check(Collector::OpenFds, count_open_fds()) {
            out.open_fds = fds;
        }
        let threads = read_threads(&mut self.status);
        if let Some(threads) = self.failures.check(Collector::Threads, threads) {
            out.threads = threads;
        }
        out
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::new()
    }
}

/// The sampler thread: a first sample at once, the first with CPU usage once it can have
/// one, then one per `interval` until every receiver is gone.
fn run(
    tx: &watch::Sender<Published>,
    interval: Duration,
    filesystem_timeout: Duration,
    selection: Selection,
    mut disk_paths: Option<watch::Receiver<Vec<std::path::PathBuf>>>,
) {
    let mut sampler = Sampler::with_filesystems(filesystem_timeout, selection);
    let mut first = sampler.sample();
    first.cpu = None;
    tx.send_replace(Arc::new(first));
    thread::sleep(sampler.cpu_ready_in());
    if tx.send(Arc::new(sampler.sample())).is_err() {
        return;
    }

    let mut next = Instant::now() + interval;
    loop {
        thread::sleep(next.saturating_duration_since(Instant::now()));
        if tx.is_closed() {
            break;
        }
        if let Some(paths) = disk_paths
            .as_mut()
            .filter(|p| p.has_changed().unwrap_or(false))
        {
            let paths = paths.borrow_and_update().clone();
            let listed = sampler.filesystems.set_disk_paths(paths);
            sampler.failures.check(Collector::Disks, listed);
        }
        if tx.send(Arc::new(sampler.sample())).is_err() {
            break;
        }
        next += interval;
        // After a stall (a suspended device, a stopped process) resume the cadence from now
        // rather than sampling back to back to catch up.
        let now = Instant::now();
        if next < now {
            next = now + interval;
        }
    }
    debug!("every metrics receiver is gone; the sampler stops");
}

/// A counter increment over `elapsed`, per second; 0 over no time.
fn per_second(delta: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { delta as f64 / secs } else { 0.0 }
}

/// The per-second rate of a cumulative counter read `elapsed` apart; a counter that went back
/// (an interface re-created, a 32-bit counter wrapping) gives 0 rather than a bogus spike.
fn rate(before: u64, now: u64, elapsed: Duration) -> f64 {
    per_second(now.saturating_sub(before), elapsed)
}

/// The interfaces of a /proc/net/dev text, through the parser the page's netdev collector
/// uses ([`net::parse_netdev`]), as the snapshot's fields (rates filled in by the caller).
fn parse_net_dev(text: &str) -> impl Iterator<Item = NetworkInterface> {
    net::parse_netdev(text, None).into_iter().map(|dev| {
        let c = dev.counters;
        NetworkInterface {
            name: dev.device,
            rx_bytes: c[0],
            rx_packets: c[1],
            rx_errors: c[2],
            rx_dropped: c[3],
            tx_bytes: c[8],
            tx_packets: c[9],
            tx_errors: c[10],
            tx_dropped: c[11],
            rx_bytes_per_sec: 0.0,
            tx_bytes_per_sec: 0.0,
        }
    })
}

/// CPU% of one process from its accumulated CPU time (ms) at two samples `elapsed` apart;
/// 100 is one busy core.
fn cpu_percent(before_ms: u64, now_ms: u64, elapsed: Duration) -> f32 {
    (per_second(now_ms.saturating_sub(before_ms), elapsed) / 10.0) as f32
}

/// A sensor reading, or `None` when it is missing or unreadable (sysinfo may give NaN).
fn celsius(reading: Option<f32>) -> Option<f32> {
    reading.filter(|c| c.is_finite())
}

/// The number of threads on the `Threads:` line of a /proc/<pid>/status.
fn parse_threads(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|value| value.trim().parse().ok())
}

fn read_threads(buf: &mut String) -> Result<u64, String> {
    buf.clear();
    fs::File::open("/proc/self/status")
        .and_then(|mut file| file.read_to_string(buf))
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    parse_threads(buf).ok_or_else(|| "/proc/self/status has no Threads line".to_owned())
}

/// Counts the daemon's open file descriptors, not counting the one listing them.
fn count_open_fds() -> Result<u64, String> {
    let entries = fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("listing /proc/self/fd: {e}"))?
        .count();
    Ok((entries as u64).saturating_sub(1))
}

/// A cgroup memory limit file's value in bytes; `None` for "max" and values that mean no limit.
fn parse_cgroup_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok().filter(|&bytes| bytes < UNLIMITED)
}

/// The daemon's memory cgroup paths from /proc/self/cgroup: (cgroup v1 memory, cgroup v2).
fn parse_cgroup_paths(text: &str) -> (Option<&str>, Option<&str>) {
    let mut v1 = None;
    let mut v2 = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        }
    }
    (v1, v2)
}

/// The swap limit of the daemon's memory cgroup (v1: `memsw` minus memory; v2:
/// `memory.swap.max`), looked up at the usual mount points; 0 when unlimited or not found.
fn read_cgroup_swap_limit() -> u64 {
    /// Reads `file` in the cgroup directory, or at the mount root when that directory is not
    /// visible (a container seeing its own cgroup as the root).
    fn read(mount: &str, path: &str, file: &str) -> Option<u64> {
        let text = fs::read_to_string(format!("{mount}{path}/{file}"))
            .or_else(|_| fs::read_to_string(format!("{mount}/{file}")))
            .ok()?;
        parse_cgroup_limit(&text)
    }
    let Ok(text) = fs::read_to_string("/proc/self/cgroup") else {
        return 0;
    };
    let path = |p: &str| p.trim_end_matches('/').to_owned();
    match parse_cgroup_paths(&text) {
        (Some(v1), _) => {
            let v1 = path(v1);
            let mount = "/sys/fs/cgroup/memory";
            match (
                read(mount, &v1, "memory.memsw.limit_in_bytes"),
                read(mount, &v1, "memory.limit_in_bytes"),
            ) {
                (Some(memsw), Some(memory)) => memsw.saturating_sub(memory),
                _ => 0,
            }
        }
        (None, Some(v2)) => read("/sys/fs/cgroup", &path(v2), "memory.swap.max").unwrap_or(0),
        (None, None) => 0,
    }
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The collectors that can fail on their own.
#[derive(Clone, Copy, Debug)]
enum Collector {
    System,
    Disks,
    Networks,
    Components,
    Hostname,
    KernelVersion,
    Os,
    BootTime,
    Uptime,
    LoadAverage,
    Process,
    OpenFds,
    Threads,
}

/// Which collectors have failed before: the first failure of each logs at warn, later ones at
/// debug, so a device without some source does not fill the journal.
#[derive(Debug, Default)]
struct Failures(u32);

impl Failures {
    fn report(&mut self, collector: Collector, error: &dyn Display) {
        let bit = 1 << collector as u32;
        if self.0 & bit == 0 {
            self.0 |= bit;
            warn!(?collector, "metrics collector failed, skipping it: {error}");
        } else {
            debug!(?collector, "metrics collector failed: {error}");
        }
    }

    fn check<T, E: Display>(&mut self, collector: Collector, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.report(collector, &e)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples of this machine carry memory, a hostname, the kernel's arch, CPU cores, the
    /// loopback interface, and the test process's RSS, open fds and threads.
    #[test]
    fn two_samples_describe_the_device_and_the_process() {
        let mut sampler = Sampler::new();
        let _ = sampler.sample();
        thread::sleep(Duration::from_millis(250));
        let snapshot = sampler.sample();

        let memory = snapshot.memory.expect("memory");
        assert!(memory.total_bytes > 0, "{memory:?}");
        let host = snapshot.host.expect("host");
        assert!(!host.hostname.is_empty(), "{host:?}");
        assert!(
            uname_machine_matches(&host.arch, std::env::consts::ARCH),
            "uname arch {:?} vs compiled for {}",
            host.arch,
            std::env::consts::ARCH
        );
        let process = snapshot.process.expect("process");
        assert!(process.rss_bytes > 0, "{process:?}");
        assert!(process.open_fds > 0, "{process:?}");
        assert!(process.threads >= 1, "{process:?}");
        assert_eq!(process.pid, std::process::id());
        let cpu = snapshot.cpu.expect("cpu");
        assert!(!cpu.cores.is_empty(), "{cpu:?}");
        assert!(
            snapshot.networks.iter().any(|i| i.name == "lo"),
            "{:?}",
            snapshot.networks
        );
        assert!(snapshot.rpc.is_empty());
    }

    /// uname(2)'s machine names for the arch Rust compiled for (`arm` runs as armv6l/armv7l,
    /// or armv8l/aarch64 on a 64-bit kernel).
    fn uname_machine_matches(machine: &str, arch: &str) -> bool {
        match arch {
            "arm" => machine.starts_with("arm") || machine == "aarch64",
            "x86" => matches!(machine, "i386" | "i486" | "i586" | "i686"),
            "powerpc64" => machine.starts_with("ppc64"),
            _ => machine == arch,
        }
    }

    /// spawn() returns at once; its first published snapshot follows at once, without CPU
    /// usage; the next has per-core CPU usage (which takes two CPU reads 200 ms apart); and
    /// its thread ends once the receiver is dropped.
    #[test]
    fn spawn_publishes_a_first_sample_and_stops_without_receivers() {
        // Keep a core busy so some core's usage over those 200 ms cannot be 0.
        let busy = thread::spawn(|| {
            let until = Instant::now() + Duration::from_millis(600);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        });
        let threads_before = sampler_threads();
        let started = Instant::now();
        let mut rx = Sampler::spawn(Duration::from_secs(1), DEFAULT_FILESYSTEM_TIMEOUT);
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_millis(20),
            "spawn blocked {waited:?}"
        );
        assert_eq!(
            rx.borrow().sampled_at_unix_ms,
            0,
            "the starting value is empty"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut next = || {
            runtime.block_on(async {
                tokio::time::timeout(FIRST_SAMPLE_WAIT, rx.changed())
                    .await
                    .expect("a sample within a second")
                    .unwrap();
                rx.borrow_and_update().clone()
            })
        };
        let first = next();
        assert!(first.sampled_at_unix_ms > 0);
        assert!(first.memory.is_some() && first.cpu.is_none(), "{first:?}");
        let second = next();
        busy.join().unwrap();
        let cpu = second.cpu.as_ref().expect("CPU usage in the second sample");
        assert!(
            cpu.cores.iter().any(|core| core.usage_percent > 0.0),
            "no per-core usage in the second sample: {cpu:?}"
        );

        drop(rx);
        let deadline = Instant::now() + Duration::from_secs(3);
        while sampler_threads() > threads_before {
            assert!(
                Instant::now() < deadline,
                "the sampler thread outlived its receivers"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many threads of this process are named "vitals-sampler".
    fn sampler_threads() -> usize {
        fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "vitals-sampler")
            .count()
    }

    /// Counter increments turn into per-second rates, no elapsed time gives no rate, and a
    /// counter that went back gives 0 instead of a spike.
    #[test]
    fn rates_are_per_second() {
        assert_eq!(per_second(1_000, Duration::from_millis(500)), 2_000.0);
        assert_eq!(per_second(0, Duration::from_secs(1)), 0.0);
        assert_eq!(per_second(1_000, Duration::ZERO), 0.0);
        assert_eq!(rate(5_000, 6_000, Duration::from_secs(2)), 500.0);
        assert_eq!(rate(6_000, 100, Duration::from_secs(1)), 0.0);
    }

    /// /proc/net/dev's headers are skipped and each interface's receive and transmit columns
    /// (drops included) land in the right fields, also when a counter touches the colon.
    #[test]
    fn net_dev_counters_are_parsed() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
  eth0:60720230    3728    2    5    0     0          0         0   329887    2600    1    3    0     0       0          0
";
        let interfaces: Vec<_> = parse_net_dev(text).collect();
        assert_eq!(interfaces.len(), 2, "{interfaces:?}");
        let eth0 = &interfaces[1];
        assert_eq!(eth0.name, "eth0");
        assert_eq!(
            (eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors),
            (60_720_230, 3_728, 2)
        );
        assert_eq!(
            (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors),
            (329_887, 2_600, 1)
        );
        assert_eq!((eth0.rx_dropped, eth0.tx_dropped), (5, 3));
        assert_eq!(interfaces[0].name, "lo");
    }

    /// Process CPU% is CPU time over wall time, 100 per busy core, and a counter that went
    /// backwards reads as idle rather than wrapping.
    #[test]
    fn process_cpu_percent_is_per_core() {
        assert_eq!(cpu_percent(1_000, 1_500, Duration::from_secs(1)), 50.0);
        assert_eq!(cpu_percent(0, 2_000, Duration::from_secs(1)), 200.0);
        assert_eq!(cpu_percent(2_000, 1_000, Duration::from_secs(1)), 0.0);
    }

    /// The Threads line is found among the other status lines, with its tab.
    #[test]
    fn threads_come_from_the_status_line() {
        let status =
            "Name:\tvitalsd\nUmask:\t0022\nVmRSS:\t    1644 kB\nThreads:\t7\nSigQ:\t0/96365\n";
        assert_eq!(parse_threads(status), Some(7));
        assert_eq!(parse_threads("Name:\tvitalsd\n"), None);
        assert_eq!(parse_threads("Threads:\tmany\n"), None);
    }

    /// An unreadable sensor (missing or NaN) is absent, not a bogus number.
    #[test]
    fn unreadable_sensors_are_absent() {
        assert_eq!(celsius(Some(41.5)), Some(41.5));
        assert_eq!(celsius(Some(f32::NAN)), None);
        assert_eq!(celsius(None), None);
    }

    /// "max" and cgroup v1's page-counter maximum both read as no limit; numbers are bytes.
    #[test]
    fn cgroup_limits_parse_with_unlimited_as_none() {
        assert_eq!(parse_cgroup_limit("268435456\n"), Some(268_435_456));
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit("0\n"), Some(0));
    }

    /// The memory controller's v1 path and the unified v2 path are told apart.
    #[test]
    fn cgroup_paths_come_from_proc_self_cgroup() {
        let v1 = "5:devices:/\n4:memory:/process_api/3fc1\n3:cpu,cpuacct:/\n0::/\n";
        assert_eq!(
            parse_cgroup_paths(v1),
            (Some("/process_api/3fc1"), Some("/"))
        );
        let v2 = "0::/system.slice/vitalsd.service\n";
        assert_eq!(
            parse_cgroup_paths(v2),
            (None, Some("/system.slice/vitalsd.service"))
        );
        assert_eq!(parse_cgroup_paths("garbage\n"), (None, None));
    }
}
