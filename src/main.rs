// Training allocates and frees large temporary tensors every step; glibc's malloc returns them
// to the OS and faults them in again, which cost about 40% of CPU training time. mimalloc keeps
// them (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // SAFETY: the first thing the process does; no other thread exists yet.
    unsafe { xp::train::threads::configure() };
    xp::cli::main()
}
