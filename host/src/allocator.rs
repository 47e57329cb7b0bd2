//! Keeps the training loop's large buffers in the process.
//!
//! burn allocates every activation and gradient afresh each step. glibc serves blocks above
//! its mmap threshold with fresh mappings and returns them to the kernel on free, so every
//! step paid for page faults and zeroing of the same memory again (visible in `perf`;
//! what the tuning buys: BENCHMARKS.md, "CPU backends"). Raising the thresholds lets freed
//! blocks be reused.

/// Tells glibc's malloc to keep freed memory for reuse. A no-op elsewhere.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const LIMIT: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes malloc's tuning parameters; it is called before
        // the training threads start and takes plain integers.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LIMIT);
            libc::mallopt(libc::M_TRIM_THRESHOLD, LIMIT);
        }
    }
}
