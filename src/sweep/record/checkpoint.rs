//! Checkpoints: `checkpoints/step-<N>/` with `model.safetensors` (the trained parameters by
//! their PyTorch/HF names), `optimizer.safetensors` (every optimizer buffer) and `trainer.json`
//! (the loop's state), and `checksums.json` (the SHA-256 of each, written last). Each is written
//! into a temporary directory, synced, and renamed into place, so a crash never leaves a
//! checkpoint that looks complete; the checksums catch what happens to the files afterwards (a
//! truncated copy, a flipped bit), and a resume takes the newest checkpoint that verifies. The
//! newest `keep` are kept, and `best` (the best by the objective) survives pruning.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};

use super::atomic;
use super::layout::{self, CheckpointDir, RunDir};
use crate::model::Param;
use crate::train::{Resume, Snapshot, TrainerState, Why};

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The files a checkpoint's `checksums.json` covers.
fn covered(dir: &CheckpointDir) -> [PathBuf; 3] {
    [dir.model(), dir.optimizer(), dir.trainer()]
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a checkpoint of the run in `run_dir`; `keep` is how many step checkpoints to keep.
pub fn write(run_dir: &RunDir, cp: &Snapshot, keep: usize) -> io::Result<CheckpointDir> {
    let root = run_dir.checkpoints();
    fs::create_dir_all(&root).map_err(atomic::at(&root))?;
    let target = match cp.why {
        Why::Best => run_dir.best_checkpoint(),
        Why::Interval | Why::Interrupt | Why::Pruned => run_dir.checkpoint(cp.state.step),
    };
    let name = file_name(&target.path);
    let temp = CheckpointDir::new(&root.join(format!(".{name}.tmp-{}", std::process::id())));
    let _ = fs::remove_dir_all(&temp.path);
    fs::create_dir(&temp.path).map_err(atomic::at(&temp.path))?;
    let trained: HashMap<String, Tensor> = cp
        .params
        .iter()
        .filter(|p| p.trainable)
        .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
        .collect();
    save(&temp.model(), &trained)?;
    crate::sweep::fault::point("checkpoint-write");
    let buffers: HashMap<String, Tensor> = cp
        .optimizer
        .iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).map_err(other)?,
            ))
        })
        .collect::<io::Result<_>>()?;
    save(&temp.optimizer(), &buffers)?;
    let json = serde_json::to_vec_pretty(cp.state).map_err(other)?;
    atomic::write(&temp.trainer(), &json)?;
    let mut sums = BTreeMap::new();
    for file in covered(&temp) {
        let bytes = fs::read(&file).map_err(atomic::at(&file))?;
        sums.insert(file_name(&file), sha256(&bytes));
    }
    let sums = serde_json::to_vec_pretty(&sums).map_err(other)?;
    atomic::write(&temp.checksums(), &sums)?;
    atomic::sync_dir(&temp.path)?;
    let rename = |from: &Path, to: &Path| fs::rename(from, to).map_err(atomic::at(to));
    if target.path.exists() {
        let old = root.join(format!(".{name}.old-{}", std::process::id()));
        rename(&target.path, &old)?;
        rename(&temp.path, &target.path)?;
        let _ = fs::remove_dir_all(&old);
    } else {
        rename(&temp.path, &target.path)?;
    }
    atomic::sync_dir(&root)?;
    if cp.why != Why::Best {
        prune(run_dir, keep.max(1))?;
    }
    Ok(target)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn save(path: &Path, tensors: &HashMap<String, Tensor>) -> io::Result<()> {
    crate::sweep::fault::write_error(path).map_err(atomic::at(path))?;
    candle_core::safetensors::save(tensors, path).map_err(|e| atomic::at(path)(other(e)))?;
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(atomic::at(path))
}

/// The newest step checkpoint of a run that verifies, with its loop state, and what is wrong
/// with each newer one (`checkpoint <dir>: <file>: <problem>`).
pub fn newest_valid(run_dir: &Path) -> (Option<(PathBuf, TrainerState)>, Vec<String>) {
    let mut problems = Vec::new();
    for (_, dir) in steps(run_dir).into_iter().rev() {
        match verify(&dir) {
            Ok(state) => return (Some((dir, state)), problems),
            Err(problem) => problems.push(problem),
        }
    }
    (None, problems)
}

/// `checkpoint <dir>: <file>: <problem>`.
fn problem(dir: &CheckpointDir, file: &Path, e: &dyn std::fmt::Display) -> String {
    format!(
        "checkpoint {}: {}: {e}",
        dir.path.display(),
        file_name(file)
    )
}

/// Checks a checkpoint's files against its checksums and reads its loop state. A checkpoint
/// written before checksums were recorded is taken as it is.
pub fn verify(dir: &Path) -> Result<TrainerState, String> {
    let dir = CheckpointDir::new(dir);
    let bad = |file: &Path, e: &dyn std::fmt::Display| problem(&dir, file, e);
    let manifest = dir.checksums();
    match fs::read(&manifest) {
        Ok(bytes) => {
            let sums: BTreeMap<String, String> =
                serde_json::from_slice(&bytes).map_err(|e| bad(&manifest, &e))?;
            for file in covered(&dir) {
                let expected = sums.get(&file_name(&file)).ok_or_else(|| {
                    bad(&manifest, &format!("no checksum of {}", file_name(&file)))
                })?;
                let bytes = fs::read(&file).map_err(|e| bad(&file, &e))?;
                if &sha256(&bytes) != expected {
                    return Err(bad(
                        &file,
                        &"its checksum differs from the one recorded (a damaged file)",
                    ));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bad(&manifest, &e)),
    }
    let trainer = dir.trainer();
    serde_json::from_slice(&fs::read(&trainer).map_err(|e| bad(&trainer, &e))?)
        .map_err(|e| bad(&trainer, &e))
}

/// The complete step checkpoints of the run in `run_dir`, oldest first.
pub fn steps(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut out: Vec<(usize, PathBuf)> = fs::read_dir(RunDir::new(run_dir).checkpoints())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let step = layout::checkpoint_step(&e.file_name())?;
            CheckpointDir::new(&e.path())
                .trainer()
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Removes all but the newest `keep` step checkpoints, and leftovers of interrupted writes.
fn prune(run_dir: &RunDir, keep: usize) -> io::Result<()> {
    let root = run_dir.checkpoints();
    for entry in fs::read_dir(&root).map_err(atomic::at(&root))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && !name.contains(&format!("-{}", std::process::id())) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let all = steps(&run_dir.path);
    for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
        fs::remove_dir_all(path).map_err(atomic::at(path))?;
    }
    Ok(())
}

/// Loads a checkpoint into the model's parameters and returns the loop's state and the
/// optimizer's buffers, after checking they fit the model.
pub fn read(dir: &Path, params: &[Param]) -> Result<Resume, String> {
    let dir = CheckpointDir::new(dir);
    let bad = |file: &Path, e: &dyn std::fmt::Display| problem(&dir, file, e);
    let (trainer, model, optimizer_file) = (dir.trainer(), dir.model(), dir.optimizer());
    let state: TrainerState =
        serde_json::from_slice(&fs::read(&trainer).map_err(|e| bad(&trainer, &e))?)
            .map_err(|e| bad(&trainer, &e))?;
    let tensors =
        candle_core::safetensors::load(&model, &Device::Cpu).map_err(|e| bad(&model, &e))?;
    for p in params.iter().filter(|p| p.trainable) {
        let t = tensors
            .get(&p.name)
            .ok_or_else(|| bad(&model, &format!("no tensor `{}`", p.name)))?;
        if t.shape() != p.var.shape() {
            return Err(bad(
                &model,
                &format!(
                    "`{}` has shape {:?}, the model needs {:?}",
                    p.name,
                    t.dims(),
                    p.var.dims()
                ),
            ));
        }
        let kind = crate::train::transfer::Kind::Parameters;
        let on = crate::train::transfer::move_to(t, p.var.device(), kind, None);
        p.var
            .set(&on.map_err(|e| bad(&model, &e))?)
            .map_err(|e| bad(&model, &e))?;
    }
    let buffers = candle_core::safetensors::load(&optimizer_file, &Device::Cpu)
        .map_err(|e| bad(&optimizer_file, &e))?;
    let mut optimizer = Vec::with_capacity(buffers.len());
    for (name, t) in buffers {
        let values = t.to_vec1::<f32>().map_err(|e| bad(&optimizer_file, &e))?;
        // Buffers hold one value per parameter element (the step counter aside).
        let (index, buffer) = name.split_once('.').unwrap_or((&name, ""));
        if buffer != "step"
            && let Some(p) = index.parse::<usize>().ok().and_then(|i| params.get(i))
            && values.len() != p.var.elem_count()
        {
            return Err(bad(
                &optimizer_file,
                &format!(
                    "`{name}` has {} values, `{}` has {}",
                    values.len(),
                    p.name,
                    p.var.elem_count()
                ),
            ));
        }
        optimizer.push((name, values));
    }
    optimizer.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Resume { state, optimizer })
}
