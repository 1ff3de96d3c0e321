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
//! Elsewhere (musl, whose allocator returns memory itself) both do nothing.

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
