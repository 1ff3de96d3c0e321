//! The clock, as node_exporter's timex and time collectors report it: the kernel's
//! synchronisation state from adjtimex(2) (read only: modes 0), the local time zone's
//! offset, and the clocksources in sysfs.
//!
//! adjtimex and localtime_r are libc calls std does not wrap; each is one audited block.
//! systemd's `ProtectClock=yes` forbids adjtimex even read-only (it filters the syscall),
//! so systemd/vitalsd.service leaves it off; without CAP_SYS_TIME nothing can be set.

use std::{fs, io, path::Path};

/// The kernel clock discipline's state (struct timex), in node_exporter's units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timex {
    pub offset_seconds: f64,
    pub frequency_adjustment_ratio: f64,
    pub maxerror_seconds: f64,
    pub estimated_error_seconds: f64,
    pub status: f64,
    pub loop_time_constant: f64,
    pub tick_seconds: f64,
    pub pps_frequency_hertz: f64,
    pub pps_jitter_seconds: f64,
    pub pps_shift_seconds: f64,
    pub pps_stability_hertz: f64,
    pub pps_jitter_total: f64,
    pub pps_calibration_total: f64,
    pub pps_error_total: f64,
    pub pps_stability_exceeded_total: f64,
    pub tai_offset_seconds: f64,
    /// 1 unless adjtimex says TIME_ERROR (the clock is not synchronised).
    pub sync_status: f64,
}

/// ppm with a 16-bit fraction, as struct timex keeps frequencies.
const PPM16: f64 = 1_000_000.0 * 65_536.0;

/// The clock's state now.
#[allow(unsafe_code)]
pub fn timex() -> io::Result<Timex> {
    // SAFETY: a zeroed struct timex with modes 0 asks adjtimex only to read; the kernel
    // fills the struct, which lives across the call and is read only when it succeeded.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(convert(&t, state))
}

/// struct timex in node_exporter's units: offsets in µs, or ns with STA_NANO; frequencies
/// in ppm with a 16-bit fraction.
#[allow(clippy::unnecessary_cast)] // the fields are 32 bits wide on 32-bit ARM
fn convert(t: &libc::timex, state: i32) -> Timex {
    let divisor = if t.status & libc::STA_NANO != 0 {
        1e9
    } else {
        1e6
    };
    Timex {
        offset_seconds: t.offset as f64 / divisor,
        frequency_adjustment_ratio: 1.0 + t.freq as f64 / PPM16,
        maxerror_seconds: t.maxerror as f64 / 1e6,
        estimated_error_seconds: t.esterror as f64 / 1e6,
        status: t.status as f64,
        loop_time_constant: t.constant as f64,
        tick_seconds: t.tick as f64 / 1e6,
        pps_frequency_hertz: t.ppsfreq as f64 / PPM16,
        pps_jitter_seconds: t.jitter as f64 / divisor,
        pps_shift_seconds: t.shift as f64,
        pps_stability_hertz: t.stabil as f64 / PPM16,
        pps_jitter_total: t.jitcnt as f64,
        pps_calibration_total: t.calcnt as f64,
        pps_error_total: t.errcnt as f64,
        pps_stability_exceeded_total: t.stbcnt as f64,
        tai_offset_seconds: t.tai as f64,
        sync_status: if state == libc::TIME_ERROR { 0.0 } else { 1.0 },
    }
}

/// The local time zone's abbreviation and offset from UTC in seconds, now (`TZ`, else
/// /etc/localtime; UTC without either).
#[allow(unsafe_code)]
pub fn time_zone(unix_secs: i64) -> Option<(String, i64)> {
    // time_t as localtime_r takes it (inferred: musl's libc marks the alias deprecated
    // while it moves to 64 bits), bounded by the conversion on 32-bit targets.
    #[allow(clippy::useless_conversion)] // i64 on 64-bit targets, i32 on armv7-gnu
    let now = unix_secs.try_into().ok()?;
    // SAFETY: localtime_r writes only the struct tm it is given, which lives across the
    // call; tm_zone then points at libc's time zone data (static, NUL-terminated), copied
    // out at once. libc's tzset is guarded by its own lock, and nothing here sets TZ.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return None;
        }
        let zone = if tm.tm_zone.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(tm.tm_zone)
                .to_string_lossy()
                .into_owned()
        };
        #[allow(clippy::unnecessary_cast)]
        Some((zone, tm.tm_gmtoff as i64))
    }
}

/// A clocksource device's available sources and the current one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Clocksource {
    /// The `N` of clocksourceN.
    pub device: String,
    pub available: Vec<String>,
    pub current: String,
}

/// Every /sys/devices/system/clocksource/clocksourceN, sorted.
pub fn clocksources(dir: &Path) -> Vec<Clocksource> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Clocksource> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let device = name.strip_prefix("clocksource")?.to_owned();
            let read = |f: &str| fs::read_to_string(e.path().join(f)).unwrap_or_default();
            Some(Clocksource {
                device,
                available: read("available_clocksource")
                    .split_ascii_whitespace()
                    .map(str::to_owned)
                    .collect(),
                current: read("current_clocksource").trim().to_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// struct timex's units become node_exporter's: µs offsets (ns with STA_NANO), ppm16
    /// frequencies, and TIME_ERROR as not synchronised.
    #[test]
    fn timex_units() {
        // SAFETY: an all-zero struct timex is a valid value of this plain C struct.
        #[allow(unsafe_code)]
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        t.offset = 1500;
        t.freq = 65_536 * 10;
        t.maxerror = 16_000_000;
        t.tick = 10_000;
        let synced = convert(&t, libc::TIME_OK);
        assert_eq!(synced.offset_seconds, 0.0015);
        assert!((synced.frequency_adjustment_ratio - 1.000_01).abs() < 1e-12);
        assert_eq!(synced.maxerror_seconds, 16.0);
        assert_eq!(synced.tick_seconds, 0.01);
        assert_eq!(synced.sync_status, 1.0);
        t.status = libc::STA_NANO;
        let nano = convert(&t, libc::TIME_ERROR);
        assert_eq!(nano.offset_seconds, 0.0000015);
        assert_eq!(nano.sync_status, 0.0);
    }

    /// This machine answers adjtimex and has a time zone and a clocksource.
    #[test]
    fn this_machine_has_a_clock() {
        let t = timex().expect("adjtimex");
        assert!(t.tick_seconds > 0.0, "{t:?}");
        let (_, offset) = time_zone(1_700_000_000).expect("localtime_r");
        assert!(offset.abs() <= 14 * 3600);
        let sources = clocksources(Path::new("/sys/devices/system/clocksource"));
        assert!(sources.iter().all(|s| !s.current.is_empty()), "{sources:?}");
    }
}
