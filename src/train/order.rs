//! The order training examples are drawn in, and where it stands for checkpoints.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::spec::RunSpec;

/// Whether the training order is shuffled: always for synthetic data, as told for files.
pub(super) fn shuffles(spec: &RunSpec) -> bool {
    use crate::spec::DataSource;
    match &spec.data.source {
        DataSource::Csv { shuffle, .. } | DataSource::Jsonl { shuffle, .. } => *shuffle,
        _ => true,
    }
}

/// The order examples are drawn in: a fresh permutation every epoch (seeded by the run's
/// seed), or file order; the rows left over at the end of an epoch are dropped.
pub(super) struct Order {
    n: usize,
    rng: Option<Rng>,
    /// The generator's state before it drew the current permutation (for checkpoints).
    drawn_from: Option<[u64; 4]>,
    current: Vec<usize>,
    position: Option<usize>,
}

/// Where the data order stands; the permutation itself is drawn again from `drawn_from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderState {
    /// Generator state before the current permutation (`None`: file order or not started).
    pub drawn_from: Option<[u64; 4]>,
    /// Generator state now (`None`: file order).
    pub rng: Option<[u64; 4]>,
    /// Rows of the current permutation used (`None`: no epoch started yet).
    pub position: Option<usize>,
}

impl Order {
    pub fn new(n: usize, seed: u64, shuffle: bool) -> Self {
        let rng = shuffle.then(|| Rng::stream(seed, "data/order"));
        Order {
            n,
            rng,
            drawn_from: None,
            current: Vec::new(),
            position: None,
        }
    }

    pub fn state(&self) -> OrderState {
        OrderState {
            drawn_from: self.drawn_from,
            rng: self.rng.as_ref().map(Rng::state),
            position: self.position,
        }
    }

    pub fn restore(n: usize, state: &OrderState) -> Self {
        let mut order = Order {
            n,
            rng: state.rng.map(Rng::from_state),
            drawn_from: state.drawn_from,
            current: Vec::new(),
            position: state.position,
        };
        if state.position.is_some() {
            order.current = (0..n).collect();
            if let Some(from) = state.drawn_from {
                Rng::from_state(from).shuffle(&mut order.current);
            }
        }
        order
    }

    pub fn next(&mut self, count: usize) -> Vec<usize> {
        let position = self
            .position
            .filter(|p| p.saturating_add(count) <= self.current.len());
        let position = match position {
            Some(p) => p,
            None => {
                self.current = (0..self.n).collect();
                if let Some(rng) = self.rng.as_mut() {
                    self.drawn_from = Some(rng.state());
                    rng.shuffle(&mut self.current);
                }
                0
            }
        };
        let out = self.current[position..(position + count).min(self.current.len())].to_vec();
        self.position = Some(position + count);
        out
    }
}
