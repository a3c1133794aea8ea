//! Checkpoints: `checkpoints/step-<N>/` with `model.safetensors` (the trained parameters by
//! their PyTorch/HF names), `optimizer.safetensors` (every optimizer buffer) and `trainer.json`
//! (the loop's state). Each is written into a temporary directory, synced, and renamed into
//! place, so a crash never leaves a checkpoint that looks complete. The newest `keep` are kept,
//! and `best` (the best by the objective) survives pruning.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::atomic;
use super::layout::{self, CheckpointDir, RunDir};
use crate::model::Param;
use crate::train::{Checkpoint, Resume, TrainerState, Why};

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Writes a checkpoint of the run in `run_dir`; `keep` is how many step checkpoints to keep.
pub fn write(run_dir: &RunDir, cp: &Checkpoint, keep: usize) -> io::Result<CheckpointDir> {
    let root = run_dir.checkpoints();
    fs::create_dir_all(&root)?;
    let target = match cp.why {
        Why::Best => run_dir.best_checkpoint(),
        Why::Interval | Why::Interrupt => run_dir.checkpoint(cp.state.step),
    };
    let name = file_name(&target.path);
    let temp = CheckpointDir::new(&root.join(format!(".{name}.tmp-{}", std::process::id())));
    let _ = fs::remove_dir_all(&temp.path);
    fs::create_dir(&temp.path)?;
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
    // trainer.json is written last: a directory without it is never taken for a checkpoint.
    atomic::write(&temp.trainer(), &json)?;
    atomic::sync_dir(&temp.path)?;
    if target.path.exists() {
        let old = root.join(format!(".{name}.old-{}", std::process::id()));
        fs::rename(&target.path, &old)?;
        fs::rename(&temp.path, &target.path)?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&temp.path, &target.path)?;
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
    candle_core::safetensors::save(tensors, path).map_err(other)?;
    fs::File::open(path)?.sync_all()
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
    for entry in fs::read_dir(run_dir.checkpoints())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && !name.contains(&format!("-{}", std::process::id())) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let all = steps(&run_dir.path);
    for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
        fs::remove_dir_all(path)?;
    }
    Ok(())
}

/// Loads a checkpoint into the model's parameters and returns the loop's state and the
/// optimizer's buffers, after checking they fit the model.
pub fn read(dir: &Path, params: &[Param]) -> Result<Resume, String> {
    let dir = CheckpointDir::new(dir);
    let bad = |file: &Path, e: &dyn std::fmt::Display| {
        format!(
            "checkpoint {}: {}: {e}",
            dir.path.display(),
            file_name(file)
        )
    };
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
        p.var
            .set(&t.to_device(p.var.device()).map_err(|e| bad(&model, &e))?)
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
