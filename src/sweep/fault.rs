//! Fault-injection points for the crash tests: with `XP_FAULT_PAUSE=<point>` or
//! `<point>#<n>` (the n-th time it is reached), optionally followed by `@<run name>` (only
//! while that run trains), and `XP_FAULT_DIR`, the process announces that it
//! reached the point by creating `<XP_FAULT_DIR>/<point>.reached` and then waits to be killed,
//! so tests can SIGKILL it at an exact moment instead of guessing with sleeps.
//! The marker holds the pid of the process that reached the point.
//! `XP_FAULT_PANIC=<run name>` makes that run panic when it starts training, and
//! `XP_FAULT_ABORT=<run name>` aborts its process (a crash no unwinding can catch).
//! `XP_FAULT_ENOSPC=<file name>,…` makes every write of those files fail as on a full disk,
//! from the moment a run starts training in the process. `XP_FAULT_OOM=<step>,…`, optionally
//! followed by `@<run name>`, makes the first attempt at each of those optimizer steps fail as if
//! out of memory (the recovery redoes them in smaller micro-batches). `XP_FAULT_KERNEL=<kernel>`,
//! optionally followed by `@<run name>`, makes that fused kernel (`rms_norm`, `softmax`, …,
//! crate::ops::kernels) wrong in the process before the run's first step, so its self-check
//! turns it off. Without the variables these are no-ops.
//!
//! The points exist only in a build with the `fault-injection` feature (the tests turn it on);
//! in any other build they are empty functions, and the binary knows no `XP_FAULT_*` variable.

pub use imp::{out_of_memory_steps, panic_for, point, write_error, wrong_kernel};

/// Without the feature: nothing.
#[cfg(not(feature = "fault-injection"))]
mod imp {
    #[inline(always)]
    pub fn point(_: &str) {}

    #[inline(always)]
    pub fn panic_for(_: &str) {}

    #[inline(always)]
    pub fn write_error(_: &std::path::Path) -> std::io::Result<()> {
        Ok(())
    }

    #[inline(always)]
    pub fn out_of_memory_steps(_: &str) -> Vec<usize> {
        Vec::new()
    }

    #[inline(always)]
    pub fn wrong_kernel(_: &str) -> Result<Option<crate::ops::kernels::Kernel>, String> {
        Ok(None)
    }
}

#[cfg(feature = "fault-injection")]
mod imp {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    static REACHED: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);
    static RUN: Mutex<Option<String>> = Mutex::new(None);

    /// The run this process trains now, for points scoped to a run.
    pub fn set_run(name: &str) {
        if let Ok(mut run) = RUN.lock() {
            *run = Some(name.to_owned());
        }
    }

    /// A named moment a test may stop the process at.
    pub fn point(name: &str) {
        let Ok(wanted) = std::env::var("XP_FAULT_PAUSE") else {
            return;
        };
        let (wanted, run) = match wanted.split_once('@') {
            Some((point, run)) => (point.to_owned(), Some(run.to_owned())),
            None => (wanted, None),
        };
        if let Some(run) = run
            && RUN.lock().ok().and_then(|r| r.clone()).as_deref() != Some(run.as_str())
        {
            return;
        }
        let (target, nth) = match wanted.split_once('#') {
            Some((t, n)) => (t.to_owned(), n.parse().unwrap_or(1)),
            None => (wanted, 1),
        };
        if target != name {
            return;
        }
        let count = match REACHED.lock() {
            Ok(mut map) => {
                let c = map
                    .get_or_insert_with(HashMap::new)
                    .entry(target)
                    .or_default();
                *c += 1;
                *c
            }
            Err(_) => return,
        };
        if count == nth {
            if let Some(dir) = std::env::var_os("XP_FAULT_DIR") {
                // Renamed into place: a test that sees the marker reads the whole pid.
                let marker = std::path::Path::new(&dir).join(format!("{name}.reached"));
                let _ = crate::sweep::record::atomic::write(
                    &marker,
                    std::process::id().to_string().as_bytes(),
                );
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }

    /// Panics for the run named in `XP_FAULT_PANIC`, to test that a panicking run is isolated.
    pub fn panic_for(run: &str) {
        set_run(run);
        if std::env::var("XP_FAULT_PANIC").is_ok_and(|r| r == run) {
            panic!("injected panic for run `{run}` (XP_FAULT_PANIC)");
        }
        if std::env::var("XP_FAULT_ABORT").is_ok_and(|r| r == run) {
            eprintln!("injected abort for run `{run}` (XP_FAULT_ABORT)");
            std::process::abort();
        }
    }

    /// A full disk for the files named in `XP_FAULT_ENOSPC`: the error a write of `path` gets.
    pub fn write_error(path: &std::path::Path) -> std::io::Result<()> {
        let Ok(names) = std::env::var("XP_FAULT_ENOSPC") else {
            return Ok(());
        };
        // The disk fills up while a run trains, not before.
        if RUN.lock().map_or(true, |r| r.is_none()) {
            return Ok(());
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if names.split(',').any(|n| n == name) {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    /// The steps `XP_FAULT_OOM` makes run out of memory in `run`.
    pub fn out_of_memory_steps(run: &str) -> Vec<usize> {
        let Ok(wanted) = std::env::var("XP_FAULT_OOM") else {
            return Vec::new();
        };
        let (steps, only) = match wanted.split_once('@') {
            Some((steps, only)) => (steps.to_owned(), Some(only.to_owned())),
            None => (wanted, None),
        };
        if only.is_some_and(|only| only != run) {
            return Vec::new();
        }
        steps
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    /// The kernel `XP_FAULT_KERNEL` makes wrong for `run`; an error for a name that is no
    /// kernel.
    pub fn wrong_kernel(run: &str) -> Result<Option<crate::ops::kernels::Kernel>, String> {
        let Ok(wanted) = std::env::var("XP_FAULT_KERNEL") else {
            return Ok(None);
        };
        let (name, only) = match wanted.split_once('@') {
            Some((name, only)) => (name.to_owned(), Some(only.to_owned())),
            None => (wanted, None),
        };
        if only.is_some_and(|only| only != run) {
            return Ok(None);
        }
        crate::ops::kernels::Kernel::parse(&name)
            .map(Some)
            .ok_or_else(|| format!("XP_FAULT_KERNEL: `{name}` is not a kernel"))
    }
}
