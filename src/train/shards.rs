//! One optimizer step's forward and backward passes: its micro-batches split into shards that
//! run in parallel on the CPU, their losses and gradients summed in shard order.

use candle_core::{DType, Tensor};

use crate::data::{Batch, Task};
use crate::model::{Built, Mode};
use crate::ops;
use crate::rng::Rng;

use super::TrainError;

/// Each parameter's gradient, float32 on the run's device (`None` when it got none).
pub(super) type Grads = Vec<Option<Tensor>>;

/// How one optimizer step's forward and backward passes run.
pub(super) struct Pass {
    pub task: Task,
    /// The step's counted targets, over all its micro-batches.
    pub counted: usize,
    pub compute: DType,
    /// f16's loss scale: the gradients come back multiplied by it.
    pub scale: Option<f64>,
}

/// Positions (tokens, or rows of tabular data) a shard has at least. On the CPU each
/// micro-batch is split by rows into shards of about this many positions, whose forward and
/// backward passes run in parallel (rayon) and whose gradients are then summed in shard order.
/// The split depends on the batch alone, never on the number of threads, so a run's results
/// are the same whatever the thread count and timing.
const SHARD_POSITIONS: usize = 512;

/// The row ranges a micro-batch of `rows` rows, `per_row` positions each, is split into: as
/// many shards of at least [`SHARD_POSITIONS`] as fit (at least one), sizes differing by at
/// most one row.
pub fn shards(rows: usize, per_row: usize) -> Vec<std::ops::Range<usize>> {
    let n = (rows * per_row / SHARD_POSITIONS).clamp(1, rows.max(1));
    (0..n).map(|i| rows * i / n..rows * (i + 1) / n).collect()
}

/// The shards of `batch`: [`shards`] on the CPU, the whole batch elsewhere.
pub(super) fn shards_of(
    batch: &Batch,
    task: Task,
) -> candle_core::Result<Vec<std::ops::Range<usize>>> {
    let rows = batch.inputs.dim(0)?;
    if !batch.inputs.device().is_cpu() {
        return Ok(std::iter::once(0..rows).collect());
    }
    let per_row = match task {
        Task::Language { .. } => batch.inputs.elem_count() / rows.max(1),
        _ => 1,
    };
    Ok(shards(rows, per_row))
}

/// Runs `run` on each shard's index, inputs and targets and hands the results to `take` in
/// shard order. Shards run in waves of as many as the pool has threads, so at most that many
/// shards' activations and results are alive at once.
pub(super) fn on_shards<T: Send>(
    batch: &Batch,
    ranges: Vec<std::ops::Range<usize>>,
    run: impl Fn(usize, &Tensor, &Tensor) -> Result<T, TrainError> + Sync,
    mut take: impl FnMut(T),
) -> Result<(), TrainError> {
    use rayon::prelude::*;
    if let [r] = ranges.as_slice()
        && r.len() == batch.inputs.dim(0)?
    {
        take(run(0, &batch.inputs, &batch.targets)?);
        return Ok(());
    }
    let shards: Vec<_> = ranges.into_iter().enumerate().collect();
    for wave in shards.chunks(rayon::current_num_threads().max(1)) {
        let results: Vec<Result<T, TrainError>> = wave
            .par_iter()
            .map(|(i, r)| {
                let inputs = batch.inputs.narrow(0, r.start, r.len())?;
                let targets = batch.targets.narrow(0, r.start, r.len())?;
                run(*i, &inputs, &targets)
            })
            .collect();
        for result in results {
            take(result?);
        }
    }
    Ok(())
}

/// The loss of one optimizer step, and the gradient of every parameter, both staying on the
/// device (the loss, summed in f64 as the shards' f32 losses, is read once, by the caller). Each
/// micro-batch's loss is its summed loss over the step's counted targets, so the gradient is
/// exactly a full batch's. Each shard of a micro-batch draws its dropout from a generator
/// seeded from `rng`, one seed per shard in order, so the draws do not depend on which thread
/// runs which shard; gradients are summed in shard order.
pub(super) fn forward_backward(
    built: &Built,
    pass: &Pass,
    batches: &[Batch],
    rng: &mut Rng,
) -> Result<(Tensor, Grads), TrainError> {
    let mut total: Option<Tensor> = None;
    let mut grads: Grads = vec![None; built.params.len()];
    let mut failed = None;
    for batch in batches {
        let ranges = shards_of(batch, pass.task)?;
        let seeds: Vec<u64> = ranges.iter().map(|_| rng.next_u64()).collect();
        on_shards(
            batch,
            ranges,
            |i, inputs, targets| {
                shard_backward(built, pass, inputs, targets, &mut Rng::new(seeds[i]))
            },
            |(loss, part)| {
                let add = || -> candle_core::Result<()> {
                    total = Some(match total.take() {
                        Some(t) => t.add(&loss)?,
                        None => loss,
                    });
                    for (slot, g) in grads.iter_mut().zip(part) {
                        match (slot, g) {
                            (_, None) => {}
                            (Some(acc), Some(g)) => *acc = acc.add(&g)?,
                            (slot, g) => *slot = g,
                        }
                    }
                    Ok(())
                };
                if let Err(e) = add() {
                    failed.get_or_insert(e);
                }
            },
        )?;
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    let total = match total {
        Some(t) => t,
        None => Tensor::zeros((), DType::F64, &built_device(built))?,
    };
    Ok((total, grads))
}

/// The device the model's parameters live on.
fn built_device(built: &Built) -> candle_core::Device {
    built
        .params
        .first()
        .map_or(candle_core::Device::Cpu, |p| p.var.device().clone())
}

/// One shard's forward and backward pass: its loss (summed over its targets, divided by the
/// step's count; an f64 scalar tensor of the f32 value) and its parameters' gradients.
fn shard_backward(
    built: &Built,
    pass: &Pass,
    inputs: &Tensor,
    targets: &Tensor,
    rng: &mut Rng,
) -> Result<(Tensor, Grads), TrainError> {
    let output = built.model.forward(
        inputs,
        &mut Mode {
            train: true,
            rng,
            compute: pass.compute,
        },
    )?;
    let output = output.to_dtype(DType::F32)?;
    let loss = (loss_sum(pass.task, &output, targets)? / pass.counted.max(1) as f64)?;
    let value = loss.detach().to_dtype(DType::F64)?;
    let store = match pass.scale {
        Some(scale) => (loss * scale)?.backward()?,
        None => loss.backward()?,
    };
    let grads = built
        .params
        .iter()
        .map(|param| {
            store
                .get(param.var.as_tensor())
                .map(|g| g.detach().to_dtype(DType::F32))
                .transpose()
        })
        .collect::<candle_core::Result<_>>()?;
    Ok((value, grads))
}

/// The summed loss of a batch: squared error for regression, cross-entropy otherwise.
pub(super) fn loss_sum(
    task: Task,
    output: &Tensor,
    targets: &Tensor,
) -> candle_core::Result<Tensor> {
    match task {
        Task::Regression { .. } => ops::squared_error_sum(output, targets),
        Task::Classification { .. } => ops::cross_entropy_total(output, targets),
        Task::Language { vocab } => {
            let logits = output.reshape(((), vocab))?;
            ops::cross_entropy_total(&logits, &targets.flatten_all()?)
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// A step's loss and gradients read on the host.
    fn host((loss, grads): (Tensor, Grads)) -> (f64, Vec<Option<Vec<f32>>>) {
        let grads = grads
            .iter()
            .map(|g| {
                g.as_ref()
                    .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            })
            .collect();
        (loss.to_scalar::<f64>().unwrap(), grads)
    }

    #[test]
    fn shards_cover_the_rows_in_order_with_sizes_a_row_apart() {
        assert_eq!(shards(16, 128), [0..4, 4..8, 8..12, 12..16]);
        let one = |r: std::ops::Range<usize>| vec![r];
        assert_eq!(shards(64, 4), one(0..64), "256 tokens: one shard");
        assert_eq!(shards(3, 1), one(0..3));
        assert_eq!(shards(0, 128), one(0..0));
        assert_eq!(shards(2, 10_000), [0..1, 1..2], "at most a row each");
        for (rows, per_row) in [(7, 200), (33, 64), (1000, 1), (5, 512)] {
            let s = shards(rows, per_row);
            assert_eq!(s.len(), (rows * per_row / SHARD_POSITIONS).clamp(1, rows));
            assert_eq!((s[0].start, s[s.len() - 1].end), (0, rows));
            assert!(s.windows(2).all(|w| w[0].end == w[1].start));
            let sizes: Vec<usize> = s.iter().map(|r| r.len()).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{rows}×{per_row}: {sizes:?}");
        }
    }

    /// A batch split into shards gives the loss and gradients of the whole batch in one pass
    /// (to float32 rounding), and the same bits on one thread as on two.
    #[test]
    fn sharded_gradients_are_the_whole_batchs() {
        let text = r#"experiment "t" {
    device "cpu"
    model "llama" { layers 2; heads 4; dim 32; hidden 64; context 64 }
    data "copy" length=32 vocab=16 samples=64
    train { batch-size 24; optimizer "sgd" lr=0.1; }
}"#;
        let checked = crate::front::validate_text("t.kdl", text);
        let spec = &checked.plans[0].runs[0].config;
        let data = crate::data::load(&spec.data, spec.seed, Some(64)).unwrap();
        let device = Device::Cpu;
        let built =
            crate::model::build(spec, &data, Default::default(), true, "", &device).unwrap();
        let rows: Vec<usize> = (0..24).collect();
        let batch = data.batch(&data.train, &rows, &device).unwrap();
        let ranges = shards_of(&batch, data.task).unwrap();
        assert_eq!(ranges.len(), 3, "24 rows of 64 tokens: 3 shards of 512");
        let pass = Pass {
            task: data.task,
            counted: batch.counted,
            compute: DType::F32,
            scale: None,
        };
        let (whole_loss, whole) = host(
            shard_backward(
                &built,
                &pass,
                &batch.inputs,
                &batch.targets,
                &mut Rng::new(0),
            )
            .unwrap(),
        );
        let on = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                host(
                    forward_backward(
                        &built,
                        &pass,
                        std::slice::from_ref(&batch),
                        &mut Rng::new(0),
                    )
                    .unwrap(),
                )
            })
        };
        let (loss, grads) = on(1);
        assert!(
            (loss - whole_loss).abs() < 1e-6 * whole_loss,
            "{loss} vs {whole_loss}"
        );
        for (i, (g, w)) in grads.iter().zip(&whole).enumerate() {
            let (g, w) = (g.as_ref().unwrap(), w.as_ref().unwrap());
            let scale = w.iter().map(|v| v.abs()).fold(0.0f32, f32::max).max(1e-12);
            let worst = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst <= 1e-5 * scale, "parameter {i}: {worst} of {scale}");
        }
        let (loss2, grads2) = on(2);
        assert_eq!(loss.to_bits(), loss2.to_bits());
        assert_eq!(grads, grads2, "one thread and two give the same bits");
    }

    /// A token-budget step (length-grouped micro-batches padded to their longest, several
    /// accumulated) has the loss of the mean over the step's target tokens, computed here
    /// independently from each example alone, unpadded.
    #[test]
    fn a_token_budget_steps_loss_is_the_mean_over_its_target_tokens() {
        use crate::data::Examples;
        use crate::ops::IGNORE_INDEX as IGNORE;
        use crate::train::order::{Grouping, Order};
        let text = r#"experiment "t" {
    device "cpu"
    model "llama" { layers 1; heads 2; dim 16; hidden 32; context 48 }
    data "copy" length=4 vocab=16 samples=8
    train { batch-tokens 96; optimizer "sgd" lr=0.1; }
}"#;
        let checked = crate::front::validate_text("t.kdl", text);
        let spec = &checked.plans[0].runs[0].config;
        let mut data = crate::data::load(&spec.data, spec.seed, Some(48)).unwrap();
        let mut rng = Rng::new(4);
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        for _ in 0..40 {
            let len = 2 + rng.below(40);
            let prompt = rng.below(len);
            inputs.push((0..len).map(|_| rng.below(16) as u32).collect::<Vec<_>>());
            targets.push(
                (0..len)
                    .map(|i| {
                        if i < prompt {
                            IGNORE
                        } else {
                            rng.below(16) as i64
                        }
                    })
                    .collect::<Vec<_>>(),
            );
        }
        data.train = Examples::Tokens { inputs, targets };
        let device = Device::Cpu;
        let built =
            crate::model::build(spec, &data, Default::default(), true, "", &device).unwrap();
        let grouping = Grouping::Tokens {
            budget: 96,
            lengths: data.train.lengths(),
        };
        let mut order = Order::new(data.train.len(), grouping, 1, true);
        let step = order.next(3);
        assert_eq!(step.len(), 3);
        let batches: Vec<Batch> = step
            .iter()
            .map(|rows| data.batch(&data.train, rows, &device).unwrap())
            .collect();
        assert!(
            batches.iter().any(|b| b.tokens < b.inputs.elem_count()),
            "some micro-batch is padded"
        );
        let pass = Pass {
            task: data.task,
            counted: batches.iter().map(|b| b.counted).sum(),
            compute: DType::F32,
            scale: None,
        };
        let (loss, _) = host(forward_backward(&built, &pass, &batches, &mut Rng::new(0)).unwrap());
        let (mut sum, mut count) = (0.0, 0usize);
        for &row in step.iter().flatten() {
            let alone = data.batch(&data.train, &[row], &device).unwrap();
            let output = built
                .model
                .forward(
                    &alone.inputs,
                    &mut Mode {
                        train: true,
                        rng: &mut Rng::new(0),
                        compute: DType::F32,
                    },
                )
                .unwrap();
            let l = loss_sum(data.task, &output, &alone.targets).unwrap();
            sum += f64::from(l.to_scalar::<f32>().unwrap());
            count += alone.counted;
        }
        let mean = sum / count as f64;
        assert!((loss - mean).abs() <= 1e-5 * mean, "{loss} vs {mean}");
    }
}
