//! Every copy between the host and a run's device that training makes, through one function
//! ([`count`]) that adds its bytes to the run's [`Transfers`] and to the process's total, so tests
//! can show what a step copies (on the CPU a "copy to the host" is the read of a tensor's values
//! into a `Vec`, which is what it would be on a GPU).

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Shape, Tensor};

/// What a copy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A micro-batch's inputs and targets.
    Batch,
    /// Parameter values.
    Parameters,
    /// Gradients.
    Gradients,
    /// Optimizer buffers (checkpoints, and the host optimizer's state never leaves the host).
    OptimizerState,
    /// Single values: losses, norms, counts, evaluation sums.
    Scalars,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Batch,
        Kind::Parameters,
        Kind::Gradients,
        Kind::OptimizerState,
        Kind::Scalars,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Bytes and copies by [`Kind`], counted as they happen (shared by the threads of a step's
/// shards).
#[derive(Debug, Default)]
pub struct Transfers {
    bytes: [AtomicU64; 5],
    copies: [AtomicU64; 5],
}

/// Every copy of this process, whichever run made it (checkpoint reads before a run count here).
static PROCESS: Transfers = Transfers {
    bytes: [const { AtomicU64::new(0) }; 5],
    copies: [const { AtomicU64::new(0) }; 5],
};

impl Transfers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process's counts: every copy of every run so far.
    pub fn process() -> &'static Transfers {
        &PROCESS
    }

    /// Bytes of `kind` copied so far.
    pub fn bytes(&self, kind: Kind) -> u64 {
        self.bytes[kind.index()].load(Ordering::Relaxed)
    }

    /// Copies of `kind` so far.
    pub fn copies(&self, kind: Kind) -> u64 {
        self.copies[kind.index()].load(Ordering::Relaxed)
    }

    /// The counts now, by kind.
    pub fn counts(&self) -> Counts {
        Counts {
            bytes: Kind::ALL.map(|k| self.bytes(k)),
            copies: Kind::ALL.map(|k| self.copies(k)),
        }
    }
}

/// A snapshot of [`Transfers`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    bytes: [u64; 5],
    copies: [u64; 5],
}

impl Counts {
    pub fn bytes(&self, kind: Kind) -> u64 {
        self.bytes[kind.index()]
    }

    pub fn copies(&self, kind: Kind) -> u64 {
        self.copies[kind.index()]
    }
}

/// The one place a copy is counted: `bytes` of `kind`, for `run` (when the copy belongs to one)
/// and for the process.
pub fn count(kind: Kind, bytes: usize, run: Option<&Transfers>) {
    for t in std::iter::once(&PROCESS).chain(run) {
        t.bytes[kind.index()].fetch_add(bytes as u64, Ordering::Relaxed);
        t.copies[kind.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// A float tensor's values on the host, flattened, as f32.
pub fn to_host(t: &Tensor, kind: Kind, run: Option<&Transfers>) -> candle_core::Result<Vec<f32>> {
    count(kind, t.elem_count() * t.dtype().size_in_bytes(), run);
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// A one-element tensor's value on the host, as f64.
pub fn scalar(t: &Tensor, run: Option<&Transfers>) -> candle_core::Result<f64> {
    count(Kind::Scalars, t.dtype().size_in_bytes(), run);
    let t = t.flatten_all()?;
    if t.elem_count() != 1 {
        candle_core::bail!("a scalar read of a tensor of shape {:?}", t.dims())
    }
    t.to_dtype(DType::F64)?.get(0)?.to_scalar::<f64>()
}

/// Host values as an f32 tensor of `shape` on `device`.
pub fn to_device(
    values: Vec<f32>,
    shape: impl Into<Shape>,
    device: &Device,
    kind: Kind,
    run: Option<&Transfers>,
) -> candle_core::Result<Tensor> {
    count(kind, values.len() * 4, run);
    Tensor::from_vec(values, shape, device)
}

/// A tensor moved to `device` (a checkpoint's values, read on the host).
pub fn move_to(
    t: &Tensor,
    device: &Device,
    kind: Kind,
    run: Option<&Transfers>,
) -> candle_core::Result<Tensor> {
    if !t.device().same_device(device) {
        count(kind, t.elem_count() * t.dtype().size_in_bytes(), run);
    }
    t.to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_counted_by_kind_for_the_run_and_the_process() {
        let run = Transfers::new();
        let before = Transfers::process().bytes(Kind::Gradients);
        let t = Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap();
        assert_eq!(
            to_host(&t, Kind::Gradients, Some(&run)).unwrap(),
            [1.0, 2.0, 3.0]
        );
        let s = Tensor::new(2.5f32, &Device::Cpu).unwrap();
        assert_eq!(scalar(&s, Some(&run)).unwrap(), 2.5);
        let back = to_device(
            vec![4.0; 6],
            (2, 3),
            &Device::Cpu,
            Kind::Parameters,
            Some(&run),
        );
        assert_eq!(back.unwrap().dims(), [2, 3]);
        let c = run.counts();
        assert_eq!(
            (c.bytes(Kind::Gradients), c.copies(Kind::Gradients)),
            (12, 1)
        );
        assert_eq!((c.bytes(Kind::Scalars), c.copies(Kind::Scalars)), (4, 1));
        assert_eq!(c.bytes(Kind::Parameters), 24);
        assert_eq!(c.bytes(Kind::Batch) + c.bytes(Kind::OptimizerState), 0);
        assert!(Transfers::process().bytes(Kind::Gradients) >= before + 12);
        assert!(scalar(&t, None).is_err(), "three values are not a scalar");
    }
}
