//! The sweep's locks, on the operating system's file locks (`File::try_lock`, `flock` on
//! Unix): the kernel grants one holder at a time, atomically, and frees the lock when its
//! holder dies, however it dies. The file holds its holder's pid, for the message a second
//! process gets; a lock on a file that was removed meanwhile (by a holder letting go) does not
//! count, so removing the file on release never lets two processes in.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another live process holds it (its pid, when it could be read).
    Held(Option<u32>),
    Io(io::Error),
}

/// An exclusive lock on a file, held while this lives.
#[derive(Debug)]
pub struct Lock {
    file: File,
    /// Removed on release (a lock on the sweep), or left in place (a lock on its results).
    remove: Option<PathBuf>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed before the lock is released: whoever opened the file meanwhile finds it gone
        // once it holds the lock, and tries again on a new one.
        if let Some(path) = &self.remove {
            let _ = std::fs::remove_file(path);
        }
        let _ = self.file.unlock();
    }
}

impl Lock {
    /// Takes the lock on `path` unless another process holds it; the file is removed when
    /// the lock is released.
    pub fn try_acquire(path: &Path) -> Result<Lock, LockError> {
        loop {
            let mut file = open(path).map_err(|e| LockError::Io(super::atomic::at(path)(e)))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => match holder(&mut file, path) {
                    Some(pid) => return Err(LockError::Held(pid)),
                    // Let go meanwhile: try again.
                    None => continue,
                },
                Err(TryLockError::Error(e)) => {
                    return Err(LockError::Io(super::atomic::at(path)(e)));
                }
            }
            if !same_file(&file, path).map_err(LockError::Io)? {
                continue;
            }
            let pid = std::process::id().to_string();
            file.set_len(0)
                .and_then(|()| file.write_all(pid.as_bytes()))
                .and_then(|()| file.sync_all())
                .map_err(|e| LockError::Io(super::atomic::at(path)(e)))?;
            return Ok(Lock {
                file,
                remove: Some(path.to_owned()),
            });
        }
    }

    /// Waits for the lock on `path`; the file stays when the lock is released.
    pub fn acquire(path: &Path) -> io::Result<Lock> {
        let file = open(path).map_err(super::atomic::at(path))?;
        file.lock().map_err(super::atomic::at(path))?;
        Ok(Lock { file, remove: None })
    }
}

/// Whether a live process holds the lock on `path`, as its pid in the file tells (a holder that
/// let go removed the file; one that died left its pid). Reading takes no lock: a reader never
/// stands in the way of an `xp run`.
pub fn holder_lives(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    match text.trim().parse::<i32>() {
        // Just created: its holder writes the pid next.
        Err(_) => text.trim().is_empty(),
        Ok(pid) => pid > 0 && process_lives(pid),
    }
}

#[cfg(unix)]
fn process_lives(pid: i32) -> bool {
    // SAFETY: signal 0 checks that the process exists and sends nothing.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_lives(_: i32) -> bool {
    true
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

/// Whether `path` still names the file `file` (a holder letting go removes it).
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> io::Result<bool> {
    Ok(path.exists())
}

/// The pid the holder of `file` wrote (it writes it right after taking the lock, so an empty
/// file is read again for a moment); `None` when the holder let go and removed the file.
fn holder(file: &mut File, path: &Path) -> Option<Option<u32>> {
    for _ in 0..50 {
        let mut text = String::new();
        if file.rewind().is_ok()
            && file.read_to_string(&mut text).is_ok()
            && let Ok(pid) = text.trim().parse()
        {
            return Some(Some(pid));
        }
        if !same_file(file, path).unwrap_or(true) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    /// Two contenders start together, many times: exactly one gets the lock each time, and
    /// the other is told it is held.
    #[test]
    fn two_at_once_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join(".lock"));
        for _ in 0..500 {
            let start = Arc::new(Barrier::new(2));
            let tried = Arc::new(Barrier::new(2));
            let contenders: Vec<_> = (0..2)
                .map(|_| {
                    let (path, start, tried) = (path.clone(), start.clone(), tried.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        let got = Lock::try_acquire(&path);
                        // Both have tried before either lets go.
                        tried.wait();
                        match got {
                            Ok(_) => true,
                            Err(LockError::Held(pid)) => {
                                assert_eq!(pid, Some(std::process::id()));
                                false
                            }
                            Err(LockError::Io(e)) => panic!("{e}"),
                        }
                    })
                })
                .collect();
            let won: usize = contenders
                .into_iter()
                .map(|c| usize::from(c.join().unwrap()))
                .sum();
            assert_eq!(won, 1);
            assert!(!path.exists());
        }
    }

    /// Contenders that take and release the lock as fast as they can, on a file removed at
    /// every release, are never inside together.
    #[test]
    fn taking_and_releasing_never_lets_two_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join(".lock"));
        let inside = Arc::new(AtomicUsize::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let contenders: Vec<_> = (0..4)
            .map(|_| {
                let (path, inside, entered) = (path.clone(), inside.clone(), entered.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        if let Ok(lock) = Lock::try_acquire(&path) {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                            entered.fetch_add(1, Ordering::SeqCst);
                            inside.fetch_sub(1, Ordering::SeqCst);
                            drop(lock);
                        }
                    }
                })
            })
            .collect();
        for c in contenders {
            c.join().unwrap();
        }
        assert!(entered.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn a_waiting_lock_waits_and_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".results.lock");
        let count = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (path, count) = (path.clone(), count.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _lock = Lock::acquire(&path).unwrap();
                        let seen = count.load(Ordering::SeqCst);
                        std::thread::yield_now();
                        count.store(seen + 1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(count.load(Ordering::SeqCst), 800);
        assert!(path.exists());
    }
}
