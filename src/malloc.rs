//! glibc's malloc, told to give memory back: a daemon that runs for months must return to
//! its footprint after a burst (a connection storm, large messages), however it was
//! started, by hand, in a container or by the unit.
//!
//! - [`tune`], at start: a fixed mmap threshold of 256 KiB. glibc raises its threshold
//!   after the first large block is freed, so later 4 MiB message buffers would come from,
//!   and stay in, its arenas (RELIABILITY.md, finding 2); fixed, they are mapped and
//!   unmapped each time. A `GLIBC_TUNABLES` that sets `mmap_threshold` is left to rule.
//! - [`trim`], after connections close: `malloc_trim(0)` returns the free pages of every
//!   arena, which glibc otherwise keeps for reuse (a storm of TLS connections left
//!   ~27 MiB).
//!
//! - [`reexec`], first thing in `main`: glibc's per-thread cache (tcache) keeps up to 7
//!   free chunks of each small size per thread, which `malloc_trim` does not touch and
//!   which pin the pages they sit on (+2.7 MiB after a connection storm). glibc reads its
//!   tunables only at exec, and no call changes them later, so when `GLIBC_TUNABLES` does
//!   not set `glibc.malloc.tcache_count` the daemon executes itself again with it set: the
//!   same process (pid, arguments, environment, descriptors), before any thread, file or
//!   socket of its own exists.
//!
//! Elsewhere (musl, whose allocator returns memory itself) all three do nothing.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    // SAFETY: the declarations match glibc's <malloc.h>; both functions only take and
    // return integers, may be called from any thread at any time, and are in every glibc
    // the binary runs on (2.34 and newer, docs/arm.md).
    unsafe extern "C" {
        pub safe fn mallopt(param: i32, value: i32) -> i32;
        pub safe fn malloc_trim(pad: usize) -> i32;
    }
    /// `M_MMAP_THRESHOLD` of <malloc.h>.
    pub const M_MMAP_THRESHOLD: i32 = -3;
}

/// What [`reexec`] sets `glibc.malloc.tcache_count` to: TCACHE_COUNT free chunks per size
/// and thread instead of 7 (BENCHMARKS.md and RELIABILITY.md have the measurements).
pub const TCACHE_COUNT: u32 = 1;

/// Set in the environment of the second execution, so that a `GLIBC_TUNABLES` the loader
/// drops (a secure execution, under file capabilities) cannot make a loop of it. Not
/// `VITALSD_*`: those are config keys.
const REEXECUTED: &str = "VITALS_MALLOC_REEXECUTED";

/// Executes the daemon again with `glibc.malloc.tcache_count` set, unless `GLIBC_TUNABLES`
/// sets it already (the unit does; so may the user). Returns only when it does not
/// re-execute: `Ok(())`, or the error exec gave (no /proc, say), for the log; the daemon
/// then runs with glibc's default cache.
pub fn reexec() -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const TUNABLE: &str = "glibc.malloc.tcache_count";
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if current.contains(TUNABLE) || std::env::var_os(REEXECUTED).is_some() {
            return Ok(());
        }
        let tunables = match current.as_str() {
            "" => format!("{TUNABLE}={TCACHE_COUNT}"),
            _ => format!("{current}:{TUNABLE}={TCACHE_COUNT}"),
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_default();
        Err(std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .env(REEXECUTED, "1")
            .exec())
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    Ok(())
}

/// Sets malloc's options; call once at start, before the runtime's threads exist.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if !tunables.contains("mmap_threshold") {
            glibc::mallopt(glibc::M_MMAP_THRESHOLD, 256 << 10);
        }
    }
}

/// Returns the free memory of every malloc arena to the kernel.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::malloc_trim(0);
}
