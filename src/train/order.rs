//! The order training examples are drawn in, and where it stands for checkpoints.

use serde::{Deserialize, Serialize};

use crate::data::budget;
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

/// How an epoch's rows are cut into micro-batches.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Grouping {
    /// `micro` rows each; the rows left over at the end of an epoch are dropped.
    Fixed(usize),
    /// Token budgets (`batch-tokens`): rows grouped by length (see [`budget::length_grouped`]),
    /// the groups' order shuffled; `lengths` holds every row's tokens.
    Tokens { budget: usize, lengths: Vec<usize> },
}

/// The order examples are drawn in: a fresh permutation every epoch (seeded by the run's
/// seed), or file order, cut into micro-batches by a [`Grouping`].
pub(super) struct Order {
    n: usize,
    grouping: Grouping,
    rng: Option<Rng>,
    /// The generator's state before it drew the current permutation (for checkpoints).
    drawn_from: Option<[u64; 4]>,
    /// The epoch's rows in the order they are used.
    current: Vec<usize>,
    /// With token budgets, where each micro-batch of `current` ends.
    ends: Vec<usize>,
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
    pub fn new(n: usize, grouping: Grouping, seed: u64, shuffle: bool) -> Self {
        let rng = shuffle.then(|| Rng::stream(seed, "data/order"));
        Order {
            n,
            grouping,
            rng,
            drawn_from: None,
            current: Vec::new(),
            ends: Vec::new(),
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

    pub fn restore(n: usize, grouping: Grouping, state: &OrderState) -> Self {
        let mut order = Order {
            n,
            grouping,
            rng: state.rng.map(Rng::from_state),
            drawn_from: state.drawn_from,
            current: Vec::new(),
            ends: Vec::new(),
            position: state.position,
        };
        if state.position.is_some() {
            let mut from = state.drawn_from.map(Rng::from_state);
            (order.current, order.ends) = epoch(n, &order.grouping, from.as_mut());
        }
        order
    }

    /// The rows of the next optimizer step's `count` micro-batches. An epoch ends when fewer
    /// than `count` whole micro-batches are left; the next is drawn (an epoch with fewer in all
    /// gives them all).
    pub fn next(&mut self, count: usize) -> Vec<Vec<usize>> {
        match self.grouping {
            Grouping::Fixed(micro) => self.next_fixed(micro.max(1) * count, micro),
            Grouping::Tokens { .. } => self.next_groups(count),
        }
    }

    /// The next optimizer step's `rows` rows of fixed micro-batches, cut into micro-batches of
    /// `micro` (the last shorter when `micro` does not divide `rows`). How they are cut does not
    /// change which rows a step draws.
    pub fn next_fixed(&mut self, rows: usize, micro: usize) -> Vec<Vec<usize>> {
        let rows = self.next_rows(rows);
        rows.chunks(micro.max(1)).map(<[usize]>::to_vec).collect()
    }

    fn next_rows(&mut self, count: usize) -> Vec<usize> {
        let position = self
            .position
            .filter(|p| p.saturating_add(count) <= self.current.len());
        let position = match position {
            Some(p) => p,
            None => {
                self.draw();
                0
            }
        };
        let out = self.current[position..(position + count).min(self.current.len())].to_vec();
        self.position = Some(position + count);
        out
    }

    fn next_groups(&mut self, count: usize) -> Vec<Vec<usize>> {
        // The groups used so far end at `position`.
        let used = |order: &Order| {
            order
                .position
                .map(|p| order.ends.partition_point(|&e| e <= p))
        };
        let first = match used(self).filter(|g| g + count <= self.ends.len()) {
            Some(g) => g,
            None => {
                self.draw();
                0
            }
        };
        let last = (first + count).min(self.ends.len());
        let start = |g: usize| if g == 0 { 0 } else { self.ends[g - 1] };
        let out = (first..last)
            .map(|g| self.current[start(g)..self.ends[g]].to_vec())
            .collect();
        self.position = Some(start(last));
        out
    }

    /// Starts an epoch: its rows drawn from the generator, which is saved first.
    fn draw(&mut self) {
        self.drawn_from = self.rng.as_ref().map(Rng::state);
        (self.current, self.ends) = epoch(self.n, &self.grouping, self.rng.as_mut());
    }
}

/// Micro-batches in an epoch of `n` rows (the same in every epoch: a token budget's groups
/// depend on the lengths alone, not on their order).
pub(super) fn batches_per_epoch(n: usize, grouping: &Grouping) -> usize {
    match grouping {
        Grouping::Fixed(micro) => n / (*micro).max(1),
        Grouping::Tokens { .. } => epoch(n, grouping, None).1.len(),
    }
}

/// One epoch's rows in the order they are used, and with token budgets where each micro-batch
/// ends: the rows permuted by `rng` (file order without one); with token budgets grouped by
/// length, then the groups' order permuted by `rng` too.
fn epoch(n: usize, grouping: &Grouping, mut rng: Option<&mut Rng>) -> (Vec<usize>, Vec<usize>) {
    let mut rows: Vec<usize> = (0..n).collect();
    if let Some(rng) = rng.as_deref_mut() {
        rng.shuffle(&mut rows);
    }
    let Grouping::Tokens { budget, lengths } = grouping else {
        return (rows, Vec::new());
    };
    let mut groups = budget::length_grouped(&rows, lengths, *budget);
    if let Some(rng) = rng {
        rng.shuffle(&mut groups);
    }
    let ends = groups
        .iter()
        .scan(0, |end, g| {
            *end += g.len();
            Some(*end)
        })
        .collect();
    (groups.concat(), ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(budget: usize, n: usize) -> Grouping {
        let mut rng = Rng::new(11);
        let lengths = (0..n).map(|_| 1 + rng.below(40)).collect();
        Grouping::Tokens { budget, lengths }
    }

    /// Every micro-batch keeps within the budget; an epoch uses each row that fits once;
    /// epochs differ; and the same seed draws the same batches.
    #[test]
    fn token_budget_epochs_cover_the_rows_within_the_budget() {
        let (n, budget, accum) = (300, 96, 3);
        let grouping = tokens(budget, n);
        let Grouping::Tokens { lengths, .. } = &grouping else {
            unreachable!()
        };
        let per_epoch = batches_per_epoch(n, &grouping);
        let steps = per_epoch / accum;
        let mut order = Order::new(n, grouping.clone(), 5, true);
        let mut epochs = Vec::new();
        for _ in 0..3 {
            let mut rows = Vec::new();
            let mut batches = Vec::new();
            for _ in 0..steps {
                let step = order.next(accum);
                assert_eq!(step.len(), accum);
                for b in step {
                    let longest = b.iter().map(|&r| lengths[r]).max().unwrap();
                    assert!(b.len() * longest <= budget, "{b:?}");
                    rows.extend(b.iter().copied());
                    batches.push(b);
                }
            }
            let mut unique = rows.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), rows.len(), "no row twice in an epoch");
            epochs.push(batches);
        }
        assert_ne!(epochs[0], epochs[1], "each epoch draws anew");
        let mut again = Order::new(n, grouping, 5, true);
        let first: Vec<Vec<usize>> = (0..steps).flat_map(|_| again.next(accum)).collect();
        assert_eq!(first, epochs[0], "the seed decides the batches");
    }

    /// An order restored from its state mid-epoch draws what the original draws next.
    #[test]
    fn a_restored_order_continues_mid_epoch() {
        for grouping in [tokens(64, 200), Grouping::Fixed(7)] {
            let mut order = Order::new(200, grouping.clone(), 9, true);
            for _ in 0..13 {
                order.next(2);
            }
            let mut restored = Order::restore(200, grouping, &order.state());
            for _ in 0..40 {
                assert_eq!(order.next(2), restored.next(2));
            }
            assert_eq!(order.state(), restored.state());
        }
    }

    /// Fixed micro-batches draw the same rows as before token budgets existed: one
    /// permutation an epoch, cut into `micro × accumulation` rows a step.
    #[test]
    fn fixed_batches_are_chunks_of_one_permutation_an_epoch() {
        let mut order = Order::new(10, Grouping::Fixed(2), 1, true);
        let mut rng = Rng::stream(1, "data/order");
        let mut perm: Vec<usize> = (0..10).collect();
        rng.shuffle(&mut perm);
        let step: Vec<usize> = order.next(2).concat();
        assert_eq!(step, perm[..4]);
        assert_eq!(order.next(2).concat(), perm[4..8]);
        assert_eq!(order.state().position, Some(8));
    }
}
