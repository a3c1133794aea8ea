//! A run's curves as a report draws them: the chosen metrics of its `metrics.jsonl`, by step,
//! thinned to a few hundred points that keep each stretch's extremes, so a page of hundreds of
//! runs stays small and quick to draw.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// The most points a curve keeps; a chart a few hundred pixels wide shows no more.
pub const MAX_POINTS: usize = 400;

/// One metric of one run: steps and values, in step order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Curve {
    #[serde(rename = "x")]
    pub steps: Vec<u64>,
    #[serde(rename = "y")]
    pub values: Vec<f64>,
}

/// The curves of `metrics` in the text of a `metrics.jsonl`. Lines that are not JSON objects
/// (one still being written, a torn write) and values that are null or not finite are skipped;
/// a step logged twice (a run resumed from a checkpoint) keeps its last value.
pub fn parse(text: &str, metrics: &[&str]) -> BTreeMap<String, Curve> {
    let mut points: Vec<BTreeMap<u64, f64>> = vec![BTreeMap::new(); metrics.len()];
    for line in text.lines() {
        let Ok(Value::Object(row)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(step) = row.get("step").and_then(Value::as_u64) else {
            continue;
        };
        for (metric, points) in metrics.iter().zip(&mut points) {
            if let Some(v) = row
                .get(*metric)
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
            {
                points.insert(step, v);
            }
        }
    }
    metrics
        .iter()
        .zip(points)
        .filter(|(_, p)| !p.is_empty())
        .map(|(m, p)| {
            let all: Vec<(u64, f64)> = p.into_iter().collect();
            ((*m).to_owned(), downsample(&all, MAX_POINTS))
        })
        .collect()
}

/// At most `max` of the points: the first and the last, and between them the lowest and the
/// highest point of each of equal stretches, in step order, so spikes and dips survive.
pub fn downsample(points: &[(u64, f64)], max: usize) -> Curve {
    let max = max.max(4);
    let chosen: Vec<(u64, f64)> = if points.len() <= max {
        points.to_vec()
    } else {
        let inner = &points[1..points.len() - 1];
        let buckets = (max - 2) / 2;
        let mut out = Vec::with_capacity(max);
        out.push(points[0]);
        for b in 0..buckets {
            let part = &inner[b * inner.len() / buckets..(b + 1) * inner.len() / buckets];
            if part.is_empty() {
                continue;
            }
            let (mut lo, mut hi) = (0, 0);
            for (i, p) in part.iter().enumerate() {
                if p.1 < part[lo].1 {
                    lo = i;
                }
                if p.1 > part[hi].1 {
                    hi = i;
                }
            }
            out.push(part[lo.min(hi)]);
            if lo != hi {
                out.push(part[lo.max(hi)]);
            }
        }
        out.push(points[points.len() - 1]);
        out
    };
    Curve {
        steps: chosen.iter().map(|p| p.0).collect(),
        values: chosen.iter().map(|p| round(p.1)).collect(),
    }
}

/// A value to 6 significant digits, which print short in JSON and are finer than a chart.
fn round(v: f64) -> f64 {
    format!("{v:.5e}").parse().unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_lines_nulls_and_repeated_steps_are_tolerated() {
        let text = concat!(
            "{\"step\":1,\"train/loss\":2.0,\"val/loss\":null}\n",
            "not json\n",
            "[1,2]\n",
            "{\"train/loss\":5.0}\n",
            "{\"step\":2,\"train/loss\":1.5}\n",
            "{\"step\":2,\"train/loss\":1.25}\n",
            "{\"step\":3,\"train/lo"
        );
        let curves = parse(text, &["train/loss", "val/loss"]);
        assert_eq!(curves.len(), 1);
        assert_eq!(curves["train/loss"].steps, [1, 2]);
        assert_eq!(curves["train/loss"].values, [2.0, 1.25]);
    }

    #[test]
    fn downsampling_keeps_the_ends_and_each_stretch_extremes() {
        let points: Vec<(u64, f64)> = (0..1000u64)
            .map(|i| (i, if i == 500 { 100.0 } else { (i % 7) as f64 }))
            .collect();
        let c = downsample(&points, 400);
        assert!(c.steps.len() <= 400, "{}", c.steps.len());
        assert_eq!(c.steps.first(), Some(&0));
        assert_eq!(c.steps.last(), Some(&999));
        assert!(c.values.contains(&100.0));
        assert!(c.steps.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(downsample(&points[..10], 400).steps.len(), 10);
    }
}
