//! Process-wide tuning for CPU training: candle's elementwise thread pool and glibc's malloc
//! thresholds, set once at process start before any tensor exists.

/// Keeps candle's elementwise thread pool from fighting the compute threads for the cores.
///
/// candle 0.11 runs elementwise CPU ops (the gradient sums of backprop among them) on its own
/// "barrier pool" of `CANDLE_NUM_THREADS − 1` threads beside rayon's pool (matrix products and
/// our fused kernels). Its workers spin 25 000 times after every op before parking, and the
/// calling thread spins until they finish, so with as many threads as cores the spinning
/// threads and rayon's workers take turns on the same cores: on 2 busy cores a `small` step
/// took 1.2 s instead of 0.65 s (`docs/training-speed.md`). The elementwise ops are a few
/// percent of a step, so unless the user set `CANDLE_NUM_THREADS` or
/// `CANDLE_BARRIER_POOL_SPIN_LIMIT` this sets `CANDLE_NUM_THREADS=1`: no barrier pool, the
/// elementwise ops run on the calling thread and nothing spins. The pool reads it on first
/// use, so call this at process start, before any tensor op and before other threads exist.
pub fn tune_threads() {
    let set = |k: &str| std::env::var_os(k).is_some();
    if !set("CANDLE_NUM_THREADS") && !set("CANDLE_BARRIER_POOL_SPIN_LIMIT") {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Keeps freed memory in the process instead of returning it to the kernel after every
/// training step (glibc only; a no-op elsewhere). A step allocates and frees hundreds of
/// activation and gradient buffers of a few MB each; with glibc's defaults the large ones are
/// `mmap`ed and unmapped every time and the heap top is trimmed, so every step pays page
/// faults and zeroing again for the same memory. Raising the mmap threshold to its maximum
/// (32 MiB) and the trim threshold to 1 GiB makes the buffers recycle. Idempotent; call it
/// once at process start, before the allocations it should affect.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; valid at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}
