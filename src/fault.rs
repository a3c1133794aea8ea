//! Fault-injection points for the crash tests: with `XP_FAULT_PAUSE=<point>` or
//! `<point>#<n>` (the n-th time it is reached) and `XP_FAULT_DIR`, the process announces that it
//! reached the point by creating `<XP_FAULT_DIR>/<point>.reached` and then waits to be killed,
//! so tests can SIGKILL it at an exact moment instead of guessing with sleeps.
//! `XP_FAULT_PANIC=<run name>` makes that run panic when it starts training. Without the
//! variables these are no-ops.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

static REACHED: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// A named moment a test may stop the process at.
pub fn point(name: &str) {
    let Ok(wanted) = std::env::var("XP_FAULT_PAUSE") else {
        return;
    };
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
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(format!("{name}.reached")),
                b"",
            );
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Panics for the run named in `XP_FAULT_PANIC`, to test that a panicking run is isolated.
pub fn panic_for(run: &str) {
    if std::env::var("XP_FAULT_PANIC").is_ok_and(|r| r == run) {
        panic!("injected panic for run `{run}` (XP_FAULT_PANIC)");
    }
}
