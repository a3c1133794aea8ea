//! The edge of the compare stage: finds the run directories under the paths given (a run
//! directory is one holding `summary.json`; the walk does not enter it and skips hidden
//! entries) and reads them, a level of the tree at a time on every core. Symbolic links are
//! followed (`current`, runs `--reuse` linked), and a directory reached twice counts once, under
//! the first path in name order. With [`Sweeps::Current`] the walk enters only the `current`
//! sweep of a folder that has one (`runs/<experiment>/`).

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::CompareError;
use super::runs::{Recorded, Run};
use crate::sweep::record::{ExperimentDir, RunDir, Status};

/// Which sweeps of an experiment's folder the walk enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sweeps {
    /// Every one.
    #[default]
    All,
    /// Only the one its `current` link points to (`--latest`); a folder without the link is
    /// walked whole.
    Current,
}

/// The runs found, in path order, and what could not be read (those runs are left out).
#[derive(Debug, Default)]
pub struct Found {
    pub runs: Vec<Run>,
    pub warnings: Vec<String>,
}

/// A directory to look at: as the user reaches it, resolved (which identifies it), and the name
/// of the folder it is in (for a run, its sweep; a linked run belongs to the sweep linking it).
struct Dir {
    shown: PathBuf,
    real: PathBuf,
    parent: String,
}

/// What a directory turned out to be.
enum Seen {
    Run(Box<Run>, Option<String>),
    Folder(Vec<Dir>),
    Unreadable(String),
}

/// Every run under `paths`: run directories, sweep directories or any folder above them. A run
/// reached twice (through `current`, or two overlapping paths) counts once.
pub fn discover(paths: &[PathBuf], sweeps: Sweeps) -> Result<Found, CompareError> {
    let mut level = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        let shown = path.display();
        let dir = match fs::metadata(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                problems.push(format!("`{shown}` does not exist"));
                continue;
            }
            Err(e) => {
                problems.push(format!("cannot read `{shown}`: {e}"));
                continue;
            }
            Ok(m) if m.is_dir() => path.clone(),
            Ok(_) if path.file_name().is_some_and(|n| n == "summary.json") => {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            }
            Ok(_) => {
                problems.push(format!("`{shown}` is a file, not a run or sweep directory"));
                continue;
            }
        };
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        match fs::canonicalize(&dir) {
            Ok(real) => level.push(Dir {
                shown: dir,
                parent: name_of(real.parent()),
                real,
            }),
            Err(e) => problems.push(format!("cannot read `{shown}`: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(CompareError::Paths { problems });
    }
    let mut seen = HashSet::new();
    let mut found: Vec<(PathBuf, Run)> = Vec::new();
    let mut warnings = Vec::new();
    while !level.is_empty() {
        level.retain(|d| seen.insert(d.real.clone()));
        let mut next = Vec::new();
        for seen in look_at_all(&level, sweeps) {
            match seen {
                Seen::Run(run, warning) => {
                    warnings.extend(warning);
                    found.push((run.dir.clone(), *run));
                }
                Seen::Folder(children) => next.extend(children),
                Seen::Unreadable(warning) => warnings.push(warning),
            }
        }
        level = next;
    }
    if found.is_empty() {
        return Err(CompareError::NoRuns {
            paths: paths
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", "),
            skipped: warnings,
        });
    }
    // Path order is the order of a depth-first walk with entries sorted by name.
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Found {
        runs: found.into_iter().map(|(_, r)| r).collect(),
        warnings,
    })
}

/// The last component of a path, as text.
fn name_of(path: Option<&Path>) -> String {
    path.and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Looks at the directories on every core, keeping their order.
fn look_at_all(dirs: &[Dir], sweeps: Sweeps) -> Vec<Seen> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 16);
    let chunk = dirs.len().div_ceil(threads).max(32);
    std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || part.iter().map(|d| look_at(d, sweeps)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Seen::Unreadable("reading runs failed unexpectedly".into())]
                })
            })
            .collect()
    })
}

/// A run directory (its `summary.json` reads) or a folder to look into.
fn look_at(dir: &Dir, sweeps: Sweeps) -> Seen {
    let shown = dir.shown.display();
    match fs::read(RunDir::new(&dir.real).summary()) {
        Ok(bytes) => read_run(dir, &bytes),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            let current = ExperimentDir {
                path: dir.real.clone(),
            }
            .current();
            if sweeps == Sweeps::Current
                && let Ok(real) = fs::canonicalize(&current)
                && real.is_dir()
            {
                return Seen::Folder(vec![Dir {
                    shown: dir.shown.join(current.file_name().unwrap_or_default()),
                    real,
                    parent: name_of(Some(&dir.real)),
                }]);
            }
            let entries = match fs::read_dir(&dir.real) {
                Ok(entries) => entries,
                Err(e) => return Seen::Unreadable(format!("cannot read `{shown}`: {e}")),
            };
            let mut children: Vec<Dir> = entries
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter_map(|e| {
                    let path = dir.real.join(e.file_name());
                    let real = match e.file_type() {
                        Ok(t) if t.is_dir() => path,
                        Ok(t) if t.is_symlink() && path.is_dir() => fs::canonicalize(&path).ok()?,
                        _ => return None,
                    };
                    Some(Dir {
                        shown: dir.shown.join(e.file_name()),
                        real,
                        parent: name_of(Some(&dir.real)),
                    })
                })
                .collect();
            children.sort_by(|a, b| a.shown.cmp(&b.shown));
            Seen::Folder(children)
        }
        Err(e) => Seen::Unreadable(format!("skipped `{shown}`: cannot read summary.json: {e}")),
    }
}

/// One run directory: `summary.json` must parse; a missing or broken `config.json` leaves the
/// run without settings (and a warning); `metrics.jsonl` is read only for unfinished runs.
fn read_run(dir: &Dir, summary: &[u8]) -> Seen {
    let (shown, real) = (dir.shown.as_path(), dir.real.as_path());
    let name = shown.display();
    let mut summary: Recorded = match serde_json::from_slice(summary) {
        Ok(s) => s,
        Err(e) => {
            return Seen::Unreadable(format!(
                "skipped `{name}`: summary.json is not a run summary: {e}"
            ));
        }
    };
    crate::sweep::owner::settle_run(
        real,
        &summary.name,
        &mut summary.status,
        &mut summary.reason,
    );
    let mut warning = None;
    let run_dir = RunDir::new(real);
    let config = match fs::read(run_dir.config_json()) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => {
            warning = Some(format!("`{name}`: cannot read config.json: {e}"));
            None
        }
    };
    let unfinished = matches!(
        summary.status,
        Status::Pending | Status::Running | Status::Interrupted
    );
    let metrics = if unfinished {
        fs::read_to_string(run_dir.metrics()).ok()
    } else {
        None
    };
    let (mut run, problem) = Run::read(
        shown.to_path_buf(),
        summary,
        config.as_deref(),
        metrics.as_deref(),
    );
    run.sweep = dir.parent.clone();
    if let Some(e) = problem {
        warning = Some(format!("`{name}`: {e}"));
    }
    Seen::Run(Box::new(run), warning)
}
