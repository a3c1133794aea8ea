//! Writes that others read: a temporary file in the same directory, synced, then renamed over
//! the target, so a reader (or a crash) never sees a half-written file. Every error names the
//! path it concerns ([`at`]). A file can keep space in reserve ([`reserve`]) for the one write
//! that must succeed on a full disk: a run's last summary.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The bytes kept in reserve for a file ([`reserve`]): more than any summary needs.
const RESERVE_BYTES: u64 = 64 * 1024;

/// An I/O error that names `path`: `<path>: No space left on device`.
pub fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically; on a full disk, into the space [`reserve`]d for it.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match write_with(path, |file| file.write_all(bytes)) {
        Err(e) if full(&e) && reserved(path).is_file() => write_reserved(path, bytes)
            .map_err(|again| io::Error::new(e.kind(), format!("{e} (and its reserve: {again})"))),
        result => result,
    }
}

/// Writes `path` atomically with a writer callback.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let dir = parent(path);
    let temp = sibling(path, &format!("tmp-{}", std::process::id()));
    let result = (|| {
        crate::sweep::fault::write_error(path).map_err(at(path))?;
        let mut file = File::create(&temp).map_err(at(&temp))?;
        fill(&mut file).map_err(at(path))?;
        file.sync_all().map_err(at(path))?;
        fs::rename(&temp, path).map_err(at(path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Keeps space for one more write of `path` on a full disk: a file of [`RESERVE_BYTES`] beside
/// it that [`write`] fills in place (its blocks are already allocated) and renames over `path`.
pub fn reserve(path: &Path) -> io::Result<()> {
    let reserve = reserved(path);
    if reserve.is_file() {
        return Ok(());
    }
    write_with(&reserve, |file| {
        file.write_all(&vec![0; RESERVE_BYTES as usize])
    })
}

fn write_reserved(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let reserve = reserved(path);
    if bytes.len() as u64 > RESERVE_BYTES {
        return Err(io::Error::other(format!(
            "{}: {} bytes do not fit",
            reserve.display(),
            bytes.len()
        )));
    }
    let mut file = OpenOptions::new()
        .write(true)
        .open(&reserve)
        .map_err(at(&reserve))?;
    file.write_all(bytes).map_err(at(&reserve))?;
    file.set_len(bytes.len() as u64).map_err(at(&reserve))?;
    file.sync_all().map_err(at(&reserve))?;
    fs::rename(&reserve, path).map_err(at(path))?;
    sync_dir(parent(path))
}

/// Whether an error is a full disk (or quota).
fn full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::EDQUOT)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.<name>.<suffix>` beside `path`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.{suffix}"))
}

fn reserved(path: &Path) -> PathBuf {
    sibling(path, "reserve")
}

/// Makes a rename durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(d) => d.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

/// Points the symlink `link` at `target` atomically (a new link renamed over the old one).
#[cfg(unix)]
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    let temp = sibling(link, &format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).map_err(at(&temp))?;
    fs::rename(&temp, link).map_err(at(link))
}

#[cfg(not(unix))]
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    write(link, target.to_string_lossy().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a full disk the reserve takes the write: the file is replaced whole, once.
    #[test]
    fn a_full_disk_writes_into_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        write(&path, b"running").unwrap();
        reserve(&path).unwrap();
        // The reserve is filled in place, not created: a full disk still lets it be written.
        let e = write_with(&dir.path().join("x").join("y"), |_| Ok(())).unwrap_err();
        assert!(
            e.to_string()
                .contains(&dir.path().join("x").display().to_string()),
            "{e}"
        );
        write_reserved(&path, b"failed").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"failed");
        assert!(!reserved(&path).exists());
    }
}
