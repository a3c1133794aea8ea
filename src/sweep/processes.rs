//! Runs as processes: each run of a sweep trains in its own `xp exec` process, up to `jobs` at
//! once, so a crash, an abort or an out-of-memory kill of one run cannot take the sweep down.
//! Each process gets its share of the CPU threads and its device; it reports [`Update`]s as
//! JSON lines on its stdout, which this module hands to the progress display. A process dies
//! with the orchestrator (`PR_SET_PDEATHSIG`), so killing `xp run`, even with SIGKILL, leaves
//! no run writing its directory; a graceful stop (Ctrl-C, SIGTERM) is passed on to the runs,
//! which checkpoint.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::front::plan::Plan;
pub use crate::sweep::options::Processes;
use crate::sweep::options::{SweepError, SweepOptions, should_stop, stopped};
use crate::sweep::progress::{Progress, Update};
use crate::sweep::queue::Queue;
use crate::sweep::record::{self, Status, Summary, SweepDir, read_summary, results};

/// What the reader threads pass on.
enum Message {
    Stdout(usize, String),
    Stderr(usize, String),
    /// The run's stdout closed: its process is ending.
    Closed(usize),
}

/// A run's process and the threads reading its output.
struct Running {
    child: Child,
    readers: Vec<JoinHandle<()>>,
    gpu: Option<String>,
}

/// Trains the runs `todo` in processes; returns whether the sweep was interrupted.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    sweep: &SweepDir,
    plan: &mut Plan,
    queue: &mut dyn Queue,
    axes: &[String],
    summaries: &mut Vec<Summary>,
    options: &SweepOptions,
    processes: &Processes,
    progress: &mut dyn Progress,
) -> Result<bool, SweepError> {
    let total = queue.total(plan);
    let (tx, rx) = mpsc::channel();
    let mut free_gpus: VecDeque<String> = processes.gpus.iter().cloned().collect();
    let mut active: HashMap<usize, Running> = HashMap::new();
    let mut forwarded = false;
    let mut closing: HashSet<usize> = HashSet::new();
    let mut interrupted = false;
    loop {
        while active.len() < processes.jobs && !should_stop(options, summaries) {
            let Some(index) = queue.next(sweep, plan, summaries)? else {
                break;
            };
            let gpu = free_gpus.pop_front();
            let run = &plan.runs[index];
            progress.run_started(index, total, run);
            let started = record::ready_run_dir(sweep, run, &summaries[index])
                .and_then(|()| spawn(sweep, index, options, processes, gpu.as_deref(), &tx));
            match started {
                Ok((child, readers)) => {
                    active.insert(
                        index,
                        Running {
                            child,
                            readers,
                            gpu,
                        },
                    );
                }
                Err(e) => {
                    let summary = &mut summaries[index];
                    summary.fail(format!("its process could not be started: {e}"));
                    free_gpus.extend(gpu);
                    progress.run_finished(index, total, summary);
                    queue.finished(index, summaries);
                    results::write(sweep, axes, summaries)?;
                }
            }
        }
        if active.is_empty() {
            interrupted |= stopped(options);
            break;
        }
        if stopped(options) && !forwarded {
            // Each run checkpoints and ends as `interrupted`.
            for running in active.values() {
                terminate(&running.child);
            }
            forwarded = true;
        }
        // A process that closed its stdout is ending: wait for it rather than poll, so the
        // next run starts at once.
        closing.extend(relay(&rx, Some(Duration::from_millis(100)), plan, progress));
        let mut ended = Vec::new();
        for (&index, running) in active.iter_mut() {
            let status = if closing.contains(&index) {
                running.child.wait().ok()
            } else {
                running.child.try_wait().ok().flatten()
            };
            if let Some(status) = status {
                ended.push((index, status));
            }
        }
        for (index, status) in ended {
            let Some(running) = active.remove(&index) else {
                continue;
            };
            for reader in running.readers {
                let _ = reader.join();
            }
            closing.extend(relay(&rx, None, plan, progress));
            closing.remove(&index);
            free_gpus.extend(running.gpu);
            let summary = finished(sweep, plan, index, status, &summaries[index]);
            interrupted |= summary.status == Status::Interrupted;
            summaries[index] = summary;
            progress.run_finished(index, total, &summaries[index]);
            queue.finished(index, summaries);
            results::write(sweep, axes, summaries)?;
        }
    }
    Ok(interrupted)
}

/// Starts `xp exec` for one run, with its threads and device, and threads reading its output.
fn spawn(
    sweep: &SweepDir,
    index: usize,
    options: &SweepOptions,
    processes: &Processes,
    gpu: Option<&str>,
    tx: &Sender<Message>,
) -> std::io::Result<(Child, Vec<JoinHandle<()>>)> {
    let mut command = Command::new(&processes.exe);
    command
        .arg("exec")
        .arg(&sweep.path)
        .arg("--index")
        .arg(index.to_string())
        .arg("--json-progress")
        .env("RAYON_NUM_THREADS", processes.threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(device) = gpu.or(options.device.as_deref()) {
        command.arg("--device").arg(device);
    }
    die_with_parent(&mut command);
    let mut child = command.spawn()?;
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(read_lines(
            out,
            tx.clone(),
            move |l| Message::Stdout(index, l),
            Some(Message::Closed(index)),
        ));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(read_lines(
            err,
            tx.clone(),
            move |l| Message::Stderr(index, l),
            None,
        ));
    }
    Ok((child, readers))
}

fn read_lines<R: Read + Send + 'static>(
    stream: R,
    tx: Sender<Message>,
    wrap: impl Fn(String) -> Message + Send + 'static,
    at_end: Option<Message>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(wrap(line)).is_err() {
                return;
            }
        }
        if let Some(end) = at_end {
            let _ = tx.send(end);
        }
    })
}

/// Passes the runs' messages to the display: waits up to `wait` for the first one (`None`:
/// only what is there), then takes all that are queued. Returns the runs whose stdout closed.
fn relay(
    rx: &Receiver<Message>,
    wait: Option<Duration>,
    plan: &Plan,
    progress: &mut dyn Progress,
) -> Vec<usize> {
    let first = match wait {
        Some(wait) => rx.recv_timeout(wait).ok(),
        None => rx.try_recv().ok(),
    };
    let mut closed = Vec::new();
    let Some(first) = first else {
        return closed;
    };
    for message in std::iter::once(first).chain(rx.try_iter()) {
        match message {
            Message::Stdout(index, line) => match serde_json::from_str::<Update>(&line) {
                Ok(update) => progress.update(index, &update),
                Err(_) => progress.note(&format!("{}: {line}", plan.runs[index].name)),
            },
            Message::Stderr(index, line) => {
                progress.note(&format!("{}: {line}", plan.runs[index].name))
            }
            Message::Closed(index) => closed.push(index),
        }
    }
    closed
}

/// The run's summary after its process ended: as the run wrote it, or, when the process died
/// before it could (killed, aborted), failed with the reason.
fn finished(
    sweep: &SweepDir,
    plan: &Plan,
    index: usize,
    status: ExitStatus,
    before: &Summary,
) -> Summary {
    let dir = sweep.run(&plan.runs[index].name);
    match read_summary(&dir) {
        Some(s) if !matches!(s.status, Status::Running | Status::Pending) => s,
        written => {
            let mut summary = written.unwrap_or_else(|| before.clone());
            summary.fail(format!("its process {}", describe(status)));
            // Best effort: the sweep's tables record the verdict either way.
            let _ = record::write_summary(&dir, &summary);
            summary
        }
    }
}

/// `was killed by SIGKILL (out of memory?)`, `exited with code 101`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        let name = match signal {
            libc::SIGKILL => "SIGKILL (out of memory, or killed)".to_owned(),
            libc::SIGSEGV => "SIGSEGV (a crash)".to_owned(),
            libc::SIGABRT => "SIGABRT (an abort)".to_owned(),
            libc::SIGBUS => "SIGBUS (a crash)".to_owned(),
            libc::SIGTERM => "SIGTERM".to_owned(),
            n => format!("signal {n}"),
        };
        format!("was killed by {name}")
    } else {
        match status.code() {
            Some(code) => format!("exited with code {code} without recording how the run ended"),
            None => "ended without recording how the run ended".to_owned(),
        }
    }
}

/// Asks a run to stop: it checkpoints and records itself as interrupted.
fn terminate(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: a signal to a child process this module started and has not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// The run process dies when this one does, even by SIGKILL, and is in its own process group,
/// so a Ctrl-C at the terminal reaches only the orchestrator, which passes on one SIGTERM.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (setpgid, prctl, getppid, _exit) between fork and
    // exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
