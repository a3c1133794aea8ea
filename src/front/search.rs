//! A sweep's `search` block as a typed space: the sampler, the budget, and each axis with its
//! distribution (the same as a `random` block's). Also the probe points the front end resolves
//! to check a search before it runs: every choice value and both ends of every range appear in
//! at least one of them. Pure: no I/O.

use kdl::KdlValue;
use serde::{Deserialize, Serialize};

use crate::front::expand::{int, number};
use crate::front::tree::Node;

/// Which sampler suggests the trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    /// Optuna's TPE with its defaults.
    Tpe,
    /// Independent draws from the axes' distributions.
    Random,
}

impl SamplerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerKind::Tpe => "tpe",
            SamplerKind::Random => "random",
        }
    }
}

/// Where an axis draws its values from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "distribution", rename_all = "kebab-case")]
pub enum Distribution {
    Uniform {
        low: f64,
        high: f64,
    },
    LogUniform {
        low: f64,
        high: f64,
    },
    IntUniform {
        low: i64,
        high: i64,
    },
    Choice {
        #[serde(with = "values_json")]
        values: Vec<KdlValue>,
    },
}

impl Distribution {
    /// `log-uniform 1e-05 0.01`, `choice 4 8 16`: as written in KDL.
    pub fn describe(&self) -> String {
        match self {
            Distribution::Uniform { low, high } => format!("uniform {low} {high}"),
            Distribution::LogUniform { low, high } => format!("log-uniform {low:e} {high:e}"),
            Distribution::IntUniform { low, high } => format!("int-uniform {low} {high}"),
            Distribution::Choice { values } => {
                let values: Vec<String> = values
                    .iter()
                    .map(|v| crate::front::tree::Literal(v).to_string())
                    .collect();
                format!("choice {}", values.join(" "))
            }
        }
    }
}

/// One axis of the search space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchAxis {
    pub name: String,
    #[serde(flatten)]
    pub distribution: Distribution,
}

/// A sweep's `search`: recorded in `plan.json`, so a resumed sweep can tell whether it is the
/// same search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    pub sampler: SamplerKind,
    pub trials: usize,
    pub seed: u64,
    /// Trials training at once; `None`: as many as `--jobs` runs.
    pub parallel: Option<usize>,
    /// Runs per trial (the sweep's `repeat`), over consecutive seeds.
    pub repeat: usize,
    pub axes: Vec<SearchAxis>,
}

impl Search {
    /// The sweep's search, when it has one that the schema check passed (`None` for a bound
    /// written backwards, which [`probes`] reports).
    pub fn of(experiment: &Node) -> Option<Search> {
        let sweep = experiment.child("sweep")?;
        let block = sweep.child("search")?;
        let sampler = match block.arg(0)?.as_str()? {
            "tpe" => SamplerKind::Tpe,
            "random" => SamplerKind::Random,
            _ => return None,
        };
        let base_seed = experiment
            .child("seed")
            .and_then(|s| s.arg(0))
            .and_then(|a| int(&a.value))
            .unwrap_or(0);
        let prop = |name: &str| block.prop(name).and_then(|p| int(&p.value));
        let repeat = sweep
            .child("repeat")
            .and_then(|r| r.arg(0))
            .and_then(|a| int(&a.value))
            .unwrap_or(1);
        let axes = block
            .nodes()
            .iter()
            .map(axis)
            .collect::<Option<Vec<SearchAxis>>>()?;
        Some(Search {
            sampler,
            trials: usize::try_from(prop("trials")?).ok()?,
            seed: u64::try_from(prop("seed").unwrap_or(base_seed)).ok()?,
            parallel: prop("parallel").and_then(|p| usize::try_from(p).ok()),
            repeat: usize::try_from(repeat.max(1)).ok()?,
            axes,
        })
    }

    /// Runs the search trains at most: trials × repeat.
    pub fn budget(&self) -> usize {
        self.trials.saturating_mul(self.repeat)
    }

    /// Points that reach every choice value and both ends of every range, so that resolving
    /// them checks every value the search can suggest against the schema: point `i` takes
    /// choice `i` (cycling) and the low end of ranges for even `i`, the high end for odd `i`.
    pub fn probes(&self) -> Vec<Vec<(String, KdlValue)>> {
        let count = self
            .axes
            .iter()
            .map(|a| match &a.distribution {
                Distribution::Choice { values } => values.len(),
                _ => 2,
            })
            .max()
            .unwrap_or(1);
        (0..count)
            .map(|i| {
                self.axes
                    .iter()
                    .map(|a| {
                        let low = i % 2 == 0;
                        let value = match &a.distribution {
                            Distribution::Uniform { low: l, high: h }
                            | Distribution::LogUniform { low: l, high: h } => {
                                KdlValue::Float(if low { *l } else { *h })
                            }
                            Distribution::IntUniform { low: l, high: h } => {
                                KdlValue::Integer(i128::from(if low { *l } else { *h }))
                            }
                            Distribution::Choice { values } => values[i % values.len()].clone(),
                        };
                        (a.name.clone(), value)
                    })
                    .collect()
            })
            .collect()
    }
}

fn axis(node: &Node) -> Option<SearchAxis> {
    let kind = node.arg(0)?.as_str()?;
    let args: Vec<&KdlValue> = node.args().skip(1).map(|e| &e.value).collect();
    let float = |i: usize| args.get(i).and_then(|v| number(v));
    let integer = |i: usize| args.get(i).and_then(|v| int(v));
    let distribution = match kind {
        "uniform" => Distribution::Uniform {
            low: float(0)?,
            high: float(1)?,
        },
        "log-uniform" => Distribution::LogUniform {
            low: float(0)?,
            high: float(1)?,
        },
        "int-uniform" => Distribution::IntUniform {
            low: integer(0)?,
            high: integer(1)?,
        },
        "choice" => Distribution::Choice {
            values: args.into_iter().cloned().collect(),
        },
        _ => return None,
    };
    let backwards = match distribution {
        Distribution::Uniform { low, high } | Distribution::LogUniform { low, high } => low > high,
        Distribution::IntUniform { low, high } => low > high,
        Distribution::Choice { ref values } => values.is_empty(),
    };
    (!backwards).then(|| SearchAxis {
        name: node.name.clone(),
        distribution,
    })
}

/// Choice values as JSON, in `plan.json` as in `search.jsonl`.
mod values_json {
    use kdl::KdlValue;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::front::resolve::value_json;

    pub fn serialize<S: Serializer>(values: &[KdlValue], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(value_json))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<KdlValue>, D::Error> {
        let values = Vec::<serde_json::Value>::deserialize(d)?;
        Ok(values.iter().map(super::kdl_of_json).collect())
    }
}

/// A JSON scalar as a sweep value (integers stay integers).
pub fn kdl_of_json(v: &serde_json::Value) -> KdlValue {
    match v {
        serde_json::Value::String(s) => KdlValue::String(s.clone()),
        serde_json::Value::Bool(b) => KdlValue::Bool(*b),
        serde_json::Value::Null => KdlValue::Null,
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => KdlValue::Integer(i.into()),
            None => KdlValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        other => KdlValue::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_reach_every_choice_and_both_ends_of_every_range() {
        let search = Search {
            sampler: SamplerKind::Tpe,
            trials: 8,
            seed: 0,
            parallel: None,
            repeat: 1,
            axes: vec![
                SearchAxis {
                    name: "lr".into(),
                    distribution: Distribution::LogUniform {
                        low: 1e-4,
                        high: 1e-2,
                    },
                },
                SearchAxis {
                    name: "rank".into(),
                    distribution: Distribution::Choice {
                        values: vec![
                            KdlValue::Integer(4),
                            KdlValue::Integer(8),
                            KdlValue::Integer(16),
                        ],
                    },
                },
                SearchAxis {
                    name: "warm".into(),
                    distribution: Distribution::IntUniform { low: 0, high: 9 },
                },
            ],
        };
        let probes = search.probes();
        assert_eq!(probes.len(), 3);
        let values =
            |axis: usize| -> Vec<KdlValue> { probes.iter().map(|p| p[axis].1.clone()).collect() };
        assert_eq!(
            values(0),
            vec![
                KdlValue::Float(1e-4),
                KdlValue::Float(1e-2),
                KdlValue::Float(1e-4)
            ]
        );
        assert_eq!(
            values(1),
            vec![
                KdlValue::Integer(4),
                KdlValue::Integer(8),
                KdlValue::Integer(16)
            ]
        );
        assert_eq!(
            values(2),
            vec![
                KdlValue::Integer(0),
                KdlValue::Integer(9),
                KdlValue::Integer(0)
            ]
        );
        assert_eq!(search.budget(), 8);
    }
}
