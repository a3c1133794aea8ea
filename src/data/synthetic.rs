//! Synthetic tasks that need no files, generated deterministically from the data seed.

use super::{Dataset, Examples, Task, split};
use crate::ops::IGNORE_INDEX;
use crate::rng::Rng;
use crate::spec::DataSource;

/// The bytes a synthetic dataset takes once generated (`None` for data read from files), in
/// floating point so that no size overflows: checked against the machine before generating.
pub fn bytes(source: &DataSource) -> Option<f64> {
    // A token sequence is two vectors (inputs u32, targets i64), each a 24-byte header and a
    // heap block with about 16 bytes of allocator overhead.
    let sequence = |tokens: f64| 2.0 * (24.0 + 16.0) + tokens * (4.0 + 8.0);
    Some(match *source {
        DataSource::Regression {
            features, samples, ..
        } => samples as f64 * (features as f64 + 1.0) * 4.0 + features as f64 * 8.0,
        DataSource::Classification {
            features,
            classes,
            samples,
            ..
        } => {
            samples as f64 * (features as f64 * 4.0 + 8.0) + classes as f64 * features as f64 * 8.0
        }
        DataSource::ModularAddition { modulus, .. } => (modulus as f64).powi(2) * sequence(4.0),
        DataSource::Copy {
            length, samples, ..
        } => samples as f64 * sequence(2.0 * length as f64),
        _ => return None,
    })
}

/// y = x·w + noise: `features` standard-normal inputs, one output, w ~ N(0, 1/features).
pub fn regression(
    features: usize,
    samples: usize,
    noise: f64,
    validation_fraction: f64,
    seed: u64,
) -> Dataset {
    let mut rng = Rng::stream(seed, "data/regression");
    let w: Vec<f64> = (0..features)
        .map(|_| rng.normal() / (features as f64).sqrt())
        .collect();
    let mut x = Vec::with_capacity(samples * features);
    let mut y = Vec::with_capacity(samples);
    for _ in 0..samples {
        let row: Vec<f64> = (0..features).map(|_| rng.normal()).collect();
        let target = row.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + noise * rng.normal();
        x.extend(row.iter().map(|v| *v as f32));
        y.push(target as f32);
    }
    let all = Examples::Tabular {
        features: x,
        width: features,
        targets: y,
        classes: Vec::new(),
    };
    let (train, validation) = split(all, validation_fraction, Some(&mut rng));
    Dataset {
        task: Task::Regression { outputs: 1 },
        train,
        validation,
        pad: 0,
        truncated: 0,
        skipped: 0,
    }
}

/// Gaussian clusters: class centres ~ N(0, 4), examples = centre + N(0, 1).
pub fn classification(
    features: usize,
    classes: usize,
    samples: usize,
    validation_fraction: f64,
    seed: u64,
) -> Dataset {
    let mut rng = Rng::stream(seed, "data/classification");
    let centres: Vec<Vec<f64>> = (0..classes)
        .map(|_| (0..features).map(|_| 2.0 * rng.normal()).collect())
        .collect();
    let mut x = Vec::with_capacity(samples * features);
    let mut labels = Vec::with_capacity(samples);
    for _ in 0..samples {
        let c = rng.below(classes);
        x.extend(centres[c].iter().map(|m| (m + rng.normal()) as f32));
        labels.push(c as u32);
    }
    let all = Examples::Tabular {
        features: x,
        width: features,
        targets: Vec::new(),
        classes: labels,
    };
    let (train, validation) = split(all, validation_fraction, Some(&mut rng));
    Dataset {
        task: Task::Classification { classes },
        train,
        validation,
        pad: 0,
        truncated: 0,
        skipped: 0,
    }
}

/// All pairs (a, b) as `a + b =` with the answer (a + b) mod p as the only target. Tokens
/// 0..p are numbers, p is `+`, p+1 is `=`.
pub fn modular_addition(modulus: usize, train_fraction: f64, seed: u64) -> Dataset {
    let p = modulus as u32;
    let mut inputs = Vec::with_capacity(modulus * modulus);
    let mut targets = Vec::with_capacity(modulus * modulus);
    for a in 0..p {
        for b in 0..p {
            inputs.push(vec![a, p, b, p + 1]);
            targets.push(vec![
                IGNORE_INDEX,
                IGNORE_INDEX,
                IGNORE_INDEX,
                i64::from((a + b) % p),
            ]);
        }
    }
    let mut rng = Rng::stream(seed, "data/modular-addition");
    let all = Examples::Tokens { inputs, targets };
    let (train, validation) = split(all, 1.0 - train_fraction, Some(&mut rng));
    Dataset {
        task: Task::Language { vocab: modulus + 2 },
        train,
        validation,
        pad: p,
        truncated: 0,
        skipped: 0,
    }
}

/// Random sequences x₁…xₙ followed by a separator and their copy; the loss is on the copy.
/// Tokens 0..vocab are symbols, `vocab` is the separator.
pub fn copy(
    length: usize,
    vocab: usize,
    samples: usize,
    validation_fraction: f64,
    seed: u64,
) -> Dataset {
    let mut rng = Rng::stream(seed, "data/copy");
    let sep = vocab as u32;
    let mut inputs = Vec::with_capacity(samples);
    let mut targets = Vec::with_capacity(samples);
    for _ in 0..samples {
        let xs: Vec<u32> = (0..length).map(|_| rng.below(vocab) as u32).collect();
        // Sequence x₁…xₙ SEP x₁…xₙ; inputs drop its last token, targets its first.
        let sequence: Vec<u32> = xs
            .iter()
            .copied()
            .chain([sep])
            .chain(xs.iter().copied())
            .collect();
        inputs.push(sequence[..sequence.len() - 1].to_vec());
        targets.push(
            sequence[1..]
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    if i >= length {
                        i64::from(t)
                    } else {
                        IGNORE_INDEX
                    }
                })
                .collect(),
        );
    }
    let all = Examples::Tokens { inputs, targets };
    let (train, validation) = split(all, validation_fraction, Some(&mut rng));
    Dataset {
        task: Task::Language { vocab: vocab + 1 },
        train,
        validation,
        pad: sep,
        truncated: 0,
        skipped: 0,
    }
}
