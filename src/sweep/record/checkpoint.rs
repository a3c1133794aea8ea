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
use crate::model::Param;
use crate::train::{Checkpoint, Resume, TrainerState, Why};

pub const DIR: &str = "checkpoints";

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Writes a checkpoint of the run in `run_dir`; `keep` is how many step checkpoints to keep.
pub fn write(run_dir: &Path, cp: &Checkpoint, keep: usize) -> io::Result<PathBuf> {
    let root = run_dir.join(DIR);
    fs::create_dir_all(&root)?;
    let name = match cp.why {
        Why::Best => "best".to_owned(),
        Why::Interval | Why::Interrupt => format!("step-{}", cp.state.step),
    };
    let temp = root.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&temp);
    fs::create_dir(&temp)?;
    let trained: HashMap<String, Tensor> = cp
        .params
        .iter()
        .filter(|p| p.trainable)
        .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
        .collect();
    save(&temp.join("model.safetensors"), &trained)?;
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
    save(&temp.join("optimizer.safetensors"), &buffers)?;
    let json = serde_json::to_vec_pretty(cp.state).map_err(other)?;
    // trainer.json is written last: a directory without it is never taken for a checkpoint.
    atomic::write(&temp.join("trainer.json"), &json)?;
    atomic::sync_dir(&temp)?;
    let target = root.join(&name);
    if target.exists() {
        let old = root.join(format!(".{name}.old-{}", std::process::id()));
        fs::rename(&target, &old)?;
        fs::rename(&temp, &target)?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&temp, &target)?;
    }
    atomic::sync_dir(&root)?;
    if cp.why != Why::Best {
        prune(&root, keep.max(1))?;
    }
    Ok(target)
}

fn save(path: &Path, tensors: &HashMap<String, Tensor>) -> io::Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(other)?;
    fs::File::open(path)?.sync_all()
}

/// The complete step checkpoints of a run, oldest first.
pub fn steps(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut out: Vec<(usize, PathBuf)> = fs::read_dir(run_dir.join(DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path()
                .join("trainer.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Removes all but the newest `keep` step checkpoints, and leftovers of interrupted writes.
fn prune(root: &Path, keep: usize) -> io::Result<()> {
    for entry in fs::read_dir(root)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && !name.contains(&format!("-{}", std::process::id())) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let all = steps(root.parent().unwrap_or(root));
    for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
        fs::remove_dir_all(path)?;
    }
    Ok(())
}

/// Loads a checkpoint into the model's parameters and returns the loop's state and the
/// optimizer's buffers, after checking they fit the model.
pub fn read(dir: &Path, params: &[Param]) -> Result<Resume, String> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        format!("checkpoint {}: {what}: {e}", dir.display())
    };
    let state: TrainerState = serde_json::from_slice(
        &fs::read(dir.join("trainer.json")).map_err(|e| bad("trainer.json", &e))?,
    )
    .map_err(|e| bad("trainer.json", &e))?;
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
        .map_err(|e| bad("model.safetensors", &e))?;
    for p in params.iter().filter(|p| p.trainable) {
        let t = tensors
            .get(&p.name)
            .ok_or_else(|| bad("model.safetensors", &format!("no tensor `{}`", p.name)))?;
        if t.shape() != p.var.shape() {
            return Err(bad(
                "model.safetensors",
                &format!(
                    "`{}` has shape {:?}, the model needs {:?}",
                    p.name,
                    t.dims(),
                    p.var.dims()
                ),
            ));
        }
        p.var
            .set(
                &t.to_device(p.var.device())
                    .map_err(|e| bad("model.safetensors", &e))?,
            )
            .map_err(|e| bad("model.safetensors", &e))?;
    }
    let buffers = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &Device::Cpu)
        .map_err(|e| bad("optimizer.safetensors", &e))?;
    let mut optimizer = Vec::with_capacity(buffers.len());
    for (name, t) in buffers {
        let values = t
            .to_vec1::<f32>()
            .map_err(|e| bad("optimizer.safetensors", &e))?;
        // Buffers hold one value per parameter element (the step counter aside).
        let (index, buffer) = name.split_once('.').unwrap_or((&name, ""));
        if buffer != "step"
            && let Some(p) = index.parse::<usize>().ok().and_then(|i| params.get(i))
            && values.len() != p.var.elem_count()
        {
            return Err(bad(
                "optimizer.safetensors",
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
