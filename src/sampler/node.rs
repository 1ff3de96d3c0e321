//! What node_exporter's families need beyond what sysinfo gives: cumulative CPU seconds per
//! core and mode and the kernel counters (/proc/stat), every /proc/meminfo field, pressure
//! stall information, hwmon and thermal zone temperatures, uname and os-release.
//!
//! Reading is split from parsing, so the parsers are tested on fixed text. Sensors are
//! listed once and at the sampler's relist, then only their value files are read; uname,
//! os-release and the open-files limit are read once.

use std::{fs, io::Read, path::Path};

use crate::proto::metrics::{
    CpuTime, HwmonTemp, KernelStat, MemInfoField, OsRelease, Pressure, ThermalZone, Uname,
};

/// The kernel's clock ticks per second for /proc/stat (USER_HZ, 100 on every architecture
/// Linux exposes to user space, which is also what node_exporter assumes).
const USER_HZ: f64 = 100.0;

/// Reads what node_exporter's families need; one per sampler.
pub(super) struct Node {
    buf: String,
    sensors: Vec<Sensor>,
    zones: Vec<Zone>,
    pressure: bool,
}

/// One hwmon temperature input, found when listing.
struct Sensor {
    chip: String,
    chip_name: String,
    sensor: String,
    /// The directory and `tempN_`, to which `input`, `crit` and `max` are appended.
    prefix: String,
}

struct Zone {
    zone: String,
    kind: String,
    temp: String,
}

/// One sample's node part.
#[derive(Default)]
pub(super) struct NodeSample {
    pub cpu_times: Vec<CpuTime>,
    pub kernel: Option<KernelStat>,
    pub meminfo: Vec<MemInfoField>,
    pub pressure: Option<Pressure>,
    pub hwmon: Vec<HwmonTemp>,
    pub thermal_zones: Vec<ThermalZone>,
}

impl Node {
    pub(super) fn new() -> Node {
        let mut node = Node {
            buf: String::with_capacity(4096),
            sensors: Vec::new(),
            zones: Vec::new(),
            pressure: Path::new("/proc/pressure/cpu").exists(),
        };
        node.relist();
        node
    }

    /// Lists the hwmon sensors and thermal zones again.
    pub(super) fn relist(&mut self) {
        self.sensors = list_sensors(Path::new("/sys/class/hwmon"));
        self.zones = list_zones(Path::new("/sys/class/thermal"));
    }

    /// Reads every source; one that cannot be read is left empty.
    pub(super) fn sample(&mut self) -> NodeSample {
        let mut out = NodeSample::default();
        if read_into("/proc/stat", &mut self.buf) {
            let (cpu_times, kernel) = parse_stat(&self.buf);
            out.cpu_times = cpu_times;
            out.kernel = Some(kernel);
        }
        if read_into("/proc/meminfo", &mut self.buf) {
            out.meminfo = parse_meminfo(&self.buf);
        }
        if self.pressure {
            out.pressure = self.read_pressure();
        }
        out.hwmon = self
            .sensors
            .iter()
            .filter_map(|s| {
                let milli = |what: &str| read_number(&format!("{}{what}", s.prefix));
                Some(HwmonTemp {
                    chip: s.chip.clone(),
                    chip_name: s.chip_name.clone(),
                    sensor: s.sensor.clone(),
                    celsius: milli("input")? / 1000.0,
                    critical_celsius: milli("crit").map(|c| c / 1000.0),
                    max_celsius: milli("max").map(|c| c / 1000.0),
                })
            })
            .collect();
        out.thermal_zones = self
            .zones
            .iter()
            .filter_map(|z| {
                Some(ThermalZone {
                    zone: z.zone.clone(),
                    r#type: z.kind.clone(),
                    celsius: read_number(&z.temp)? / 1000.0,
                })
            })
            .collect();
        out
    }

    fn read_pressure(&mut self) -> Option<Pressure> {
        let buf = &mut self.buf;
        pressure(|file| {
            if read_into(file, buf) {
                parse_pressure(buf)
            } else {
                None
            }
        })
    }
}

/// Reads `path` into `buf` (cleared first); false when it cannot be read.
fn read_into(path: &str, buf: &mut String) -> bool {
    buf.clear();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_string(buf))
        .is_ok()
}

fn read_number(path: &str) -> Option<f64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Per-CPU times (the aggregate `cpu` line left out, as node_exporter does) and the
/// kernel's counters.
pub(super) fn parse_stat(text: &str) -> (Vec<CpuTime>, KernelStat) {
    let mut cpus = Vec::new();
    let mut kernel = KernelStat::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        let first = |mut f: std::str::SplitAsciiWhitespace<'_>| {
            f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        };
        match key {
            "ctxt" => kernel.context_switches = first(fields),
            "intr" => kernel.interrupts = first(fields),
            "processes" => kernel.forks = first(fields),
            "procs_running" => kernel.procs_running = first(fields),
            "procs_blocked" => kernel.procs_blocked = first(fields),
            cpu if cpu.len() > 3 && cpu.starts_with("cpu") => {
                let mut t = [0.0f64; 10];
                for (slot, v) in t.iter_mut().zip(fields) {
                    *slot = v.parse::<u64>().unwrap_or(0) as f64 / USER_HZ;
                }
                // The kernel counts guest time inside user (and guest_nice inside nice);
                // node_exporter reports them apart and leaves user and nice as given.
                cpus.push(CpuTime {
                    cpu: cpu.to_owned(),
                    user: t[0],
                    nice: t[1],
                    system: t[2],
                    idle: t[3],
                    iowait: t[4],
                    irq: t[5],
                    softirq: t[6],
                    steal: t[7],
                    guest: t[8],
                    guest_nice: t[9],
                });
            }
            _ => {}
        }
    }
    (cpus, kernel)
}

/// Every /proc/meminfo line, named as node_exporter names it: `Active(anon)` becomes
/// `Active_anon`; values in kB become bytes.
pub(super) fn parse_meminfo(text: &str) -> Vec<MemInfoField> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let mut parts = rest.split_ascii_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            let bytes = parts.next() == Some("kB");
            let name = match name.split_once('(') {
                Some((base, inner)) => format!("{base}_{}", inner.trim_end_matches(')')),
                None => name.to_owned(),
            };
            Some(MemInfoField {
                name,
                value: if bytes { value * 1024 } else { value },
                bytes,
            })
        })
        .collect()
}

/// The three PSI files, each read and parsed by `totals` (its `some` and `full` totals);
/// none when one of them cannot be (a kernel without PSI).
pub(super) fn pressure(
    mut totals: impl FnMut(&'static str) -> Option<(u64, u64)>,
) -> Option<Pressure> {
    let (cpu_some_micros, _) = totals("/proc/pressure/cpu")?;
    let (memory_some_micros, memory_full_micros) = totals("/proc/pressure/memory")?;
    let (io_some_micros, io_full_micros) = totals("/proc/pressure/io")?;
    Some(Pressure {
        cpu_some_micros,
        memory_some_micros,
        memory_full_micros,
        io_some_micros,
        io_full_micros,
    })
}

/// The `total=` of the `some` and `full` lines of a /proc/pressure file (`full` is 0 when
/// absent, as for cpu on older kernels).
pub(super) fn parse_pressure(text: &str) -> Option<(u64, u64)> {
    let total = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))?
            .split_ascii_whitespace()
            .find_map(|kv| kv.strip_prefix("total="))?
            .parse::<u64>()
            .ok()
    };
    Some((total("some")?, total("full").unwrap_or(0)))
}

/// Every `tempN_input` under each `/sys/class/hwmon/hwmonX`.
fn list_sensors(class: &Path) -> Vec<Sensor> {
    let Ok(entries) = fs::read_dir(class) else {
        return Vec::new();
    };
    let mut dirs: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    dirs.sort();
    let mut sensors = Vec::new();
    for dir in dirs {
        let chip = chip_label(&dir);
        let chip_name = read_trimmed(&dir.join("name"));
        let Ok(files) = fs::read_dir(&dir) else {
            continue;
        };
        let mut inputs: Vec<String> = files
            .filter_map(Result::ok)
            .filter_map(|f| f.file_name().into_string().ok())
            .filter_map(|n| {
                n.strip_suffix("_input")
                    .filter(|s| s.starts_with("temp"))
                    .map(str::to_owned)
            })
            .collect();
        inputs.sort();
        for sensor in inputs {
            sensors.push(Sensor {
                chip: chip.clone(),
                chip_name: chip_name.clone(),
                prefix: format!("{}/{sensor}_", dir.display()),
                sensor,
            });
        }
    }
    sensors
}

/// node_exporter's chip label: the device's subsystem and name (`platform_coretemp_0`,
/// `pci0000:00_0000:00:03_0` made label-safe), or the hwmon directory's name when there
/// is no device.
fn chip_label(dir: &Path) -> String {
    let device = fs::canonicalize(dir.join("device")).ok();
    let label = match &device {
        Some(device) => {
            let name = device.file_name().map(|n| n.to_string_lossy().into_owned());
            let subsystem = fs::canonicalize(device.join("subsystem"))
                .ok()
                .and_then(|s| s.file_name().map(|n| n.to_string_lossy().into_owned()));
            match (subsystem, name) {
                (Some(s), Some(n)) => format!("{s}_{n}"),
                (None, Some(n)) => n,
                _ => String::new(),
            }
        }
        None => String::new(),
    };
    let label = if label.is_empty() {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        label
    };
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Every `/sys/class/thermal/thermal_zoneN` with a readable type.
fn list_zones(class: &Path) -> Vec<Zone> {
    let Ok(entries) = fs::read_dir(class) else {
        return Vec::new();
    };
    let mut zones: Vec<Zone> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let zone = name.strip_prefix("thermal_zone")?.to_owned();
            let kind = read_trimmed(&e.path().join("type"));
            Some(Zone {
                zone,
                kind,
                temp: e.path().join("temp").display().to_string(),
            })
        })
        .collect();
    zones.sort_by(|a, b| a.zone.cmp(&b.zone));
    zones
}

/// uname(2)'s fields, from /proc/sys/kernel (the node name is the sampler's hostname).
pub(super) fn uname(machine: &str) -> Uname {
    let kernel = |f: &str| read_trimmed(&Path::new("/proc/sys/kernel").join(f));
    Uname {
        sysname: kernel("ostype"),
        release: kernel("osrelease"),
        version: kernel("version"),
        machine: machine.to_owned(),
        domainname: kernel("domainname"),
    }
}

/// /etc/os-release, else /usr/lib/os-release (os-release(5)); empty when neither exists.
pub(super) fn os_release() -> OsRelease {
    let text = fs::read_to_string("/etc/os-release")
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    parse_os_release(&text)
}

pub(super) fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value)
            .replace("\\\"", "\"");
        let slot = match key {
            "ID" => &mut os.id,
            "ID_LIKE" => &mut os.id_like,
            "NAME" => &mut os.name,
            "PRETTY_NAME" => &mut os.pretty_name,
            "VERSION" => &mut os.version,
            "VERSION_ID" => &mut os.version_id,
            "VERSION_CODENAME" => &mut os.version_codename,
            "BUILD_ID" => &mut os.build_id,
            "VARIANT" => &mut os.variant,
            "VARIANT_ID" => &mut os.variant_id,
            "IMAGE_ID" => &mut os.image_id,
            "IMAGE_VERSION" => &mut os.image_version,
            _ => continue,
        };
        *slot = value;
    }
    os
}

/// The soft open-files limit of this process (`Max open files` in /proc/self/limits).
pub(super) fn max_fds() -> u64 {
    fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// node_exporter's default `--collector.vmstat.fields`.
pub const VMSTAT_FIELDS: &str = "^(oom_kill|pgpg|pswp|pg.*fault).*";

/// The /proc/vmstat values `filter` keeps (`name value` lines).
pub(super) fn parse_vmstat(
    text: &str,
    filter: &mut super::net::FieldFilter,
    out: &mut Vec<(String, f64)>,
) {
    for (i, line) in text.lines().enumerate() {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        if filter.keep(i, name)
            && let Ok(value) = value.trim().parse::<f64>()
        {
            out.push((name.to_owned(), value));
        }
    }
}

/// The first `n` whitespace-separated numbers of a text (/proc/sys/fs/file-nr,
/// /proc/loadavg, entropy files).
pub(super) fn numbers<const N: usize>(text: &str) -> Option<[f64; N]> {
    let mut out = [0f64; N];
    let mut words = text.split_ascii_whitespace();
    for slot in &mut out {
        *slot = words.next()?.parse().ok()?;
    }
    Some(out)
}

/// This process's user and system CPU seconds from a /proc/<pid>/stat text (fields 14 and
/// 15 after the parenthesised command, which may hold spaces).
pub(super) fn process_cpu_seconds(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_ascii_whitespace();
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /proc/stat gives per-core seconds by mode (ticks / 100) and the kernel counters;
    /// the aggregate `cpu` line is left out.
    #[test]
    fn stat_gives_seconds_per_core_and_mode() {
        let text = "cpu  10 0 5 100 0 0 0 0 0 0\n\
                    cpu0 250 1 30 9000 7 2 3 4 5 6\n\
                    cpu1 100 0 20 8000 0 0 0 0\n\
                    intr 12345 1 2 3\nctxt 999\nbtime 1700000000\nprocesses 77\n\
                    procs_running 2\nprocs_blocked 1\n";
        let (cpus, kernel) = parse_stat(text);
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].cpu, "cpu0");
        assert_eq!(cpus[0].user, 2.5);
        assert_eq!(cpus[0].idle, 90.0);
        assert_eq!(cpus[0].guest_nice, 0.06);
        assert_eq!(cpus[1].system, 0.2);
        assert_eq!(cpus[1].guest, 0.0, "older kernels have fewer columns");
        assert_eq!(
            kernel,
            KernelStat {
                context_switches: 999,
                interrupts: 12345,
                forks: 77,
                procs_running: 2,
                procs_blocked: 1,
            }
        );
    }

    /// meminfo names keep the kernel's spelling with node_exporter's `(x)` -> `_x`, and kB
    /// become bytes; unit-less fields stay counts.
    #[test]
    fn meminfo_names_and_units() {
        let text = "MemTotal:        1000 kB\nActive(anon):      12 kB\nHugePages_Total:       3\n";
        let fields = parse_meminfo(text);
        let got: Vec<_> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.value, f.bytes))
            .collect();
        assert_eq!(
            got,
            [
                ("MemTotal", 1_024_000, true),
                ("Active_anon", 12 * 1024, true),
                ("HugePages_Total", 3, false)
            ]
        );
    }

    /// PSI totals come from the `some` and `full` lines; `full` may be missing.
    #[test]
    fn pressure_totals() {
        let both = "some avg10=0.00 avg60=0.00 avg300=0.00 total=123\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=45\n";
        assert_eq!(parse_pressure(both), Some((123, 45)));
        assert_eq!(
            parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n"),
            Some((9, 0))
        );
        assert_eq!(parse_pressure("garbage"), None);
    }

    /// os-release values lose their quotes; unknown keys are ignored.
    #[test]
    fn os_release_fields() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME='Debian GNU/Linux'\nID=debian\nVERSION_ID=\"12\"\nHOME_URL=\"x\"\n",
        );
        assert_eq!(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os.name, "Debian GNU/Linux");
        assert_eq!(os.id, "debian");
        assert_eq!(os.version_id, "12");
    }

    /// This machine's sources parse: cores with time, MemTotal, and a uname.
    #[test]
    fn this_machine() {
        let mut node = Node::new();
        let sample = node.sample();
        assert!(!sample.cpu_times.is_empty());
        assert!(sample.cpu_times.iter().all(|c| c.user + c.idle > 0.0));
        assert!(
            sample
                .meminfo
                .iter()
                .any(|f| f.name == "MemTotal" && f.value > 0)
        );
        assert!(sample.kernel.unwrap().context_switches > 0);
        assert_eq!(uname("x").sysname, "Linux");
        assert!(max_fds() > 0);
    }

    /// vmstat keeps node_exporter's default fields; file-nr, loadavg and /proc/self/stat
    /// give their numbers (the command may hold spaces and parentheses).
    #[test]
    fn vmstat_and_small_files() {
        let mut filter =
            super::super::net::FieldFilter::new(regex_lite::Regex::new(VMSTAT_FIELDS).unwrap());
        let mut out = Vec::new();
        parse_vmstat(
            "nr_free_pages 100
pgpgin 5
pgpgout 6
pswpin 0
pgfault 99
pgmajfault 3
oom_kill 1
numa_hit 7
",
            &mut filter,
            &mut out,
        );
        let names: Vec<_> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "pgpgin",
                "pgpgout",
                "pswpin",
                "pgfault",
                "pgmajfault",
                "oom_kill"
            ]
        );
        assert_eq!(
            numbers::<3>("2688\t0\t9223372036854775807\n"),
            Some([2688.0, 0.0, 9.223372036854776e18])
        );
        assert_eq!(
            numbers::<3>("0.52 0.58 0.59 1/391 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        let stat =
            "1234 (vi tals) d) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 7 0 100 0 0";
        assert_eq!(process_cpu_seconds(stat), Some(3.0));
    }
}
