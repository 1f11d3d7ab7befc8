//! The allocator's side of the kernels' speed: large blocks kept in the heap from step to step.

/// Lets glibc's `malloc` keep the large blocks that training frees, so that the next step
/// reuses them instead of returning them to the kernel and faulting fresh zeroed pages back in.
///
/// A training step allocates and frees the same tensors (activations, gradients, tens of MB
/// each at batch 256) every time. By default glibc serves blocks above a threshold with `mmap`
/// and unmaps them when freed, so every step pays page faults and the kernel's page zeroing
/// for each of them: measured here, about 530,000 page faults for 8 steps of the tutorial CNN,
/// and 10-20% of the CPU time. With large blocks kept in the heap the same run has about
/// 84,000.
///
/// kandle calls this once, at the first `fit`, `fit_generator`, `evaluate` or `predict`; the
/// setting is process-wide (`mallopt`), as TensorFlow's and PyTorch's caching allocators also
/// keep memory. The process's resident memory then stays near its peak instead of shrinking
/// between steps. Set the environment variable `KANDLE_NO_MALLOC_TUNING` to leave `malloc` as
/// it is. Does nothing off Linux with glibc.
///
/// ```
/// kandle::utils::tune_allocator(); // idempotent: only the first call does anything
/// kandle::utils::tune_allocator();
/// ```
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("KANDLE_NO_MALLOC_TUNING").is_some() {
                return;
            }
            // SAFETY: mallopt only changes parameters of glibc's allocator; any value is
            // accepted or refused (returns 0) without other effect.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
                libc::mallopt(libc::M_TOP_PAD, 64 << 20);
            }
        });
    }
}
