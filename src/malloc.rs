//! glibc's malloc, told to give memory back: a daemon that runs for months must return to
//! its footprint after a burst (a connection storm, large messages), however it was
//! started, by hand, in a container or by the unit.
//!
//! - [`tune`], at start: a fixed mmap threshold of 256 KiB. glibc raises its threshold
//!   after the first large block is freed, so later 4 MiB message buffers would come from,
//!   and stay in, its arenas (RELIABILITY.md, finding 2); fixed, they are mapped and
//!   unmapped each time. And a trim threshold of 1 MiB: a scrape allocates and frees a few
//!   hundred KB (the page, its gzip copy, the live reads), and at glibc's 128 KiB the top
//!   of the worker's arena went back to the kernel after each one and was faulted in,
//!   zeroed, by the next (page faults and `clear_page` were ~6% of a scrape's CPU under
//!   perf). What sits free above it still goes back with [`trim`] when connections close.
//!   A `GLIBC_TUNABLES` that sets either threshold is left to rule.
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
//!
//! Not an allocator crate: mimalloc as vitalsd's global allocator, measured against this,
//! went over the idle RssAnon budget (1.4 MiB against 0.75), kept 4 MiB message buffers
//! resident after compression bombs and held ones, and cost no less per call
//! (RELIABILITY.md, finding 7).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    use std::{
        ffi::{CString, c_char},
        ptr,
    };

    // SAFETY: the declarations match glibc's <malloc.h> and <unistd.h>. mallopt and
    // malloc_trim only take and return integers and may be called from any thread at any
    // time; execve is called only through [`exec`] below. All are in every glibc the
    // binary runs on (2.34 and newer, docs/arm.md).
    unsafe extern "C" {
        pub safe fn mallopt(param: i32, value: i32) -> i32;
        pub safe fn malloc_trim(pad: usize) -> i32;
        fn execve(
            path: *const c_char,
            argv: *const *const c_char,
            envp: *const *const c_char,
        ) -> i32;
    }
    /// `M_MMAP_THRESHOLD` of <malloc.h>.
    pub const M_MMAP_THRESHOLD: i32 = -3;
    /// `M_TRIM_THRESHOLD` of <malloc.h>.
    pub const M_TRIM_THRESHOLD: i32 = -1;

    /// execve(2) itself, where std's `CommandExt::exec` is execvp(3), which runs a file the
    /// kernel refuses (ENOEXEC: an ARM binary under qemu-user without binfmt_misc) through
    /// /bin/sh instead of failing. Returns only on failure, with its error.
    pub fn exec(path: &CString, args: &[CString], env: &[CString]) -> std::io::Error {
        let list = |strings: &[CString]| -> Vec<*const c_char> {
            (strings.iter().map(|s| s.as_ptr()))
                .chain(std::iter::once(ptr::null()))
                .collect()
        };
        let (argv, envp) = (list(args), list(env));
        // SAFETY: path, and each pointer in argv and envp, is a NUL-terminated string that
        // outlives the call; both arrays end with a null pointer, as execve requires. On
        // success it does not return; on failure it changes nothing but errno.
        unsafe { execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        std::io::Error::last_os_error()
    }
}

/// What [`reexec`] sets `glibc.malloc.tcache_count` to: TCACHE_COUNT free chunks per size
/// and thread instead of 7 (RELIABILITY.md, finding 7, has the measurements).
pub const TCACHE_COUNT: u32 = 1;

/// Set in the environment of the second execution, so that a `GLIBC_TUNABLES` the loader
/// drops (a secure execution, under file capabilities) cannot make a loop of it. Not
/// `VITALSD_*`: those are config keys.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const REEXECUTED: &str = "VITALS_MALLOC_REEXECUTED";

/// Executes the daemon again with `glibc.malloc.tcache_count` set, unless `GLIBC_TUNABLES`
/// sets it already (the unit does; so may the user). Returns only when it does not
/// re-execute: `Ok(())`, or the error exec gave (no /proc, say), for the log; the daemon
/// then runs with glibc's default cache.
pub fn reexec() -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const TUNABLE: &str = "glibc.malloc.tcache_count";
        let current = tunables();
        if current.contains(TUNABLE) || std::env::var_os(REEXECUTED).is_some() {
            return Ok(());
        }
        let tunables = match current.as_str() {
            "" => format!("{TUNABLE}={TCACHE_COUNT}"),
            _ => format!("{current}:{TUNABLE}={TCACHE_COUNT}"),
        };
        use std::{ffi::CString, os::unix::ffi::OsStrExt};
        // Neither an argument nor a variable can hold a NUL.
        let c = |bytes: &[u8]| CString::new(bytes).unwrap_or_default();
        let args: Vec<CString> = std::env::args_os().map(|a| c(a.as_bytes())).collect();
        let mut env: Vec<CString> = std::env::vars_os()
            .filter(|(key, _)| key != "GLIBC_TUNABLES")
            .map(|(key, value)| c(&[key.as_bytes(), b"=", value.as_bytes()].concat()))
            .collect();
        env.push(c(format!("GLIBC_TUNABLES={tunables}").as_bytes()));
        env.push(c(format!("{REEXECUTED}=1").as_bytes()));
        Err(glibc::exec(&c(b"/proc/self/exe"), &args, &env))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    Ok(())
}

/// Sets malloc's options; call once at start, before the runtime's threads exist.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = tunables();
        if !tunables.contains("mmap_threshold") {
            glibc::mallopt(glibc::M_MMAP_THRESHOLD, 256 << 10);
        }
        if !tunables.contains("trim_threshold") {
            glibc::mallopt(glibc::M_TRIM_THRESHOLD, 1 << 20);
        }
    }
}

/// Returns the free memory of every malloc arena to the kernel.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::malloc_trim(0);
}

/// `GLIBC_TUNABLES` as this process has it (empty when unset).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tunables() -> String {
    std::env::var("GLIBC_TUNABLES").unwrap_or_default()
}
