//! This process's CPU time (user + system, every thread), read from `/proc/self/stat`, so
//! the load generator can show it is not the bottleneck. No getrusage: the crate forbids
//! unsafe code.

use std::time::Duration;

/// Clock ticks per second of the `stat` times (`USER_HZ`: 100 on every Linux architecture
/// we build for; `sysconf` would need unsafe code).
const TICKS_PER_SEC: u64 = 100;

/// User and system CPU time of the whole process so far; `None` where /proc is missing.
pub fn process_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat)
}

/// Parses `utime` and `stime` (fields 14 and 15) out of a `/proc/PID/stat` line.
fn parse_stat(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SEC,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime and stime are found after a command name holding spaces and parentheses.
    #[test]
    fn parses_stat_line() {
        let line = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 1790 0 0 0 250 37 0 0 20 0 9 0 \
                    123 456 789";
        assert_eq!(parse_stat(line), Some(Duration::from_millis(2870)));
        assert_eq!(parse_stat("garbage"), None);
    }

    /// Burning CPU shows up in the process time.
    #[test]
    fn own_time_grows() {
        let before = process_time().unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(process_time().unwrap() > before);
    }
}
