//! How a training process uses the CPU's cores. Matrix products run on rayon's pool (gemm), and
//! so do the shards a batch is split into (crate::train). candle's element-wise ops have a pool
//! of their own whose workers spin between ops; beside a busy rayon pool they take turns with
//! rayon's workers for the same cores instead of adding work (BENCHMARKS.md measures it), so xp
//! runs candle's element-wise ops on the calling thread and gets its parallelism from shards.

/// Sets candle's element-wise pool to the calling thread (`CANDLE_NUM_THREADS=1`) unless the
/// environment already says otherwise (candle reads it when it first runs such an op; child
/// processes inherit it), and raises gemm's threshold for splitting a matrix product over
/// threads to [`GEMM_THREADING_WORK`].
///
/// # Safety
/// Changes the process environment: call it before the process starts any other thread, as
/// the first thing in `main`.
pub unsafe fn configure() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees no other thread exists yet.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    gemm::set_threading_threshold(GEMM_THREADING_WORK);
}

/// The multiply-adds a block of a matrix product needs before gemm splits it over threads
/// (gemm's default is 48·48·256, about 0.6 million). Waking the pool costs more than a block that
/// small takes on one core: on the quickstart model, two threads trained at two thirds of one
/// thread's speed with the default and at the same speed with this (BENCHMARKS.md).
const GEMM_THREADING_WORK: usize = 1 << 23;

/// The threads a run's pool has when nothing else limits it: `RAYON_NUM_THREADS` when set to a
/// number above 0 (xp sets it for each run process from `--jobs`), else the machine's logical
/// cores, as rayon counts them.
pub fn available() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
