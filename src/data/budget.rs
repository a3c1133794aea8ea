//! Token-budget micro-batches (`batch-tokens`): examples grouped so that a batch, padded to its
//! longest example, holds at most the budget's tokens.

/// The tokens a batch of `rows` examples whose longest has `longest` tokens occupies once padded.
pub fn padded(rows: usize, longest: usize) -> usize {
    rows.saturating_mul(longest)
}

/// Training micro-batches: `rows` sorted by length (stably, so rows of one length keep the
/// order they came in: a shuffled order stays shuffled among equals) and cut greedily so that
/// each batch's padded size stays within `budget`. Rows longer than the budget are left out
/// (see [`over_budget`]). Sorting first keeps the padding small; the caller shuffles the
/// batches' order.
pub fn length_grouped(rows: &[usize], lengths: &[usize], budget: usize) -> Vec<Vec<usize>> {
    let mut sorted: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|&r| lengths[r] <= budget)
        .collect();
    sorted.sort_by_key(|&r| lengths[r]);
    greedy(&sorted, lengths, budget)
}

/// Evaluation batches: `rows` in their order, cut greedily under `budget`; a row longer than
/// the budget is a batch of its own (evaluation keeps every example).
pub fn consecutive(rows: &[usize], lengths: &[usize], budget: usize) -> Vec<Vec<usize>> {
    greedy(rows, lengths, budget)
}

/// Examples longer than `budget` tokens, which no training batch can hold.
pub fn over_budget(lengths: &[usize], budget: usize) -> usize {
    lengths.iter().filter(|&&l| l > budget).count()
}

/// Cuts `rows` in order into batches: a row joins the current batch while the batch padded to
/// its longest row stays within `budget`, else it starts the next one.
fn greedy(rows: &[usize], lengths: &[usize], budget: usize) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for &r in rows {
        let grown = longest.max(lengths[r]);
        if !current.is_empty() && padded(current.len() + 1, grown) > budget {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(lengths[r]);
        current.push(r);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn cost(batch: &[usize], lengths: &[usize]) -> usize {
        padded(
            batch.len(),
            batch.iter().map(|&r| lengths[r]).max().unwrap_or(0),
        )
    }

    #[test]
    fn batches_never_pass_the_budget_and_hold_every_row_that_fits() {
        let mut rng = Rng::new(3);
        for budget in [1, 7, 64, 100, 1000] {
            let lengths: Vec<usize> = (0..500).map(|_| 1 + rng.below(120)).collect();
            let mut rows: Vec<usize> = (0..lengths.len()).collect();
            rng.shuffle(&mut rows);
            let batches = length_grouped(&rows, &lengths, budget);
            assert!(batches.iter().all(|b| !b.is_empty()));
            for b in &batches {
                assert!(cost(b, &lengths) <= budget, "{budget}: {b:?}");
            }
            let mut kept: Vec<usize> = batches.concat();
            kept.sort();
            let mut fits: Vec<usize> = (0..lengths.len())
                .filter(|&r| lengths[r] <= budget)
                .collect();
            fits.sort();
            assert_eq!(kept, fits, "each row that fits exactly once");
            assert_eq!(over_budget(&lengths, budget), lengths.len() - fits.len());
        }
    }

    #[test]
    fn rows_of_similar_length_share_a_batch() {
        let lengths = [5, 1, 5, 2, 1, 2];
        let rows = [0, 1, 2, 3, 4, 5];
        // 1, 1 then 2: three rows padded to 2 are 6 > 4; the rows of 5 do not fit at all.
        assert_eq!(length_grouped(&rows, &lengths, 4), [vec![1, 4], vec![3, 5]]);
        assert_eq!(
            length_grouped(&rows, &lengths, 10),
            [vec![1, 4, 3, 5], vec![0, 2]]
        );
    }

    #[test]
    fn evaluation_keeps_order_and_long_rows() {
        let lengths = [3, 3, 9, 2, 2, 2];
        let rows: Vec<usize> = (0..6).collect();
        assert_eq!(
            consecutive(&rows, &lengths, 6),
            [vec![0, 1], vec![2], vec![3, 4, 5]]
        );
    }
}
