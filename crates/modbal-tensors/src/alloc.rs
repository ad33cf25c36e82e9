//! Keeping freed memory for reuse (glibc).
//!
//! A training step allocates and frees the same large buffers (activations, gradients, im2col
//! scratch) every step. glibc's malloc serves requests above its mmap threshold (dynamic, at
//! most 32 MiB) with fresh `mmap` regions and gives freed memory back to the kernel (`munmap`,
//! heap trimming), so the next step page-faults every page of those buffers again: in profiles
//! of the conv benchmarks, page faults and the kernel's page clearing took 10-15 % of the step.
//!
//! [`retain_freed_memory`] sets `M_MMAP_MAX = 0` (every block comes from the heap, whatever its
//! size) and `M_TRIM_THRESHOLD` to its maximum (freed memory stays in the process), so that
//! steady-state steps reuse pages that are already mapped. It also sets `M_ARENA_MAX = 1`: one
//! heap for every thread. Otherwise each thread that allocates gets its own arena, made of
//! mmap'd heaps of at most 64 MiB that glibc unmaps as soon as they empty, whatever the trim
//! threshold, and a block larger than that cannot come from them at all. The training loop runs
//! on a worker thread of rayon's pool (`threads::in_pool`), so without it small-cnn's 67 MB
//! activations were mapped and page-faulted afresh every step (its step went from 196 to
//! 460-490 ms). The cost: the process keeps its peak
//! heap until it exits, which a training process does anyway. The `modbal` binary and the
//! example binaries call [`crate::apply_speed_defaults`] at start-up (which calls it unless
//! `MODBAL_MALLOC=system` is set); libraries never call it on their own.

/// Tells glibc's malloc to serve every block of every thread from one heap and never return
/// freed memory to the kernel (see the module docs). Returns whether the settings were applied: `false` on
/// platforms without glibc, where it does nothing.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tuning parameters; the values are in range.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
