//! The schedules replay HF transformers and PyTorch: every case of tests/reference/schedules.py,
//! the lr of every optimizer step; reduce-on-plateau's state survives a checkpoint; and no
//! length, warmup or epoch size makes a schedule panic or leave the finite numbers.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde::Deserialize;
use xp::spec::{
    self, Anneal, BatchSize, Direction, Interval, Length, Schedule, ScheduleKind, ThresholdMode,
    Warmup,
};
use xp::train::schedule::LrSchedule;

/// Written by tests/reference/schedules.py (HF transformers' `get_scheduler` and
/// torch.optim.lr_scheduler stepping SGD as a training loop does): per case the run's length,
/// schedule and objective, the evaluations reduce-on-plateau sees, and the lr of every step.
const REFERENCE: &str = include_str!("../reference/schedules.json");

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Case {
    name: String,
    lr: f64,
    length: Length,
    steps_per_epoch: usize,
    objective: Direction,
    schedule: Schedule,
    /// (step, objective): evaluations after those optimizer steps.
    observations: Vec<(usize, f64)>,
    total_steps: usize,
    warmup_steps: usize,
    /// The lr of optimizer step k at index k - 1.
    lrs: Vec<f64>,
}

fn reference() -> Vec<Case> {
    let r: Reference =
        serde_json::from_str(REFERENCE).expect("tests/reference/schedules.json parses");
    r.cases
}

fn train(length: Length, schedule: Schedule) -> spec::Train {
    spec::Train {
        length,
        batch_size: Some(BatchSize::Fixed(1)),
        batch_tokens: None,
        gradient_accumulation: 1,
        effective_batch: None,
        optimizer: spec::OptimizerConfig {
            lr: 0.1,
            decay_all: false,
            kind: spec::OptimizerKind::Sgd(spec::Sgd {
                momentum: 0.0,
                dampening: 0.0,
                nesterov: false,
                weight_decay: 0.0,
            }),
        },
        schedule,
        grad_clip: None,
        eval: None,
        log_every: 10,
        checkpoint: None,
        early_stop: None,
    }
}

fn schedule_of(case: &Case) -> LrSchedule {
    let t = train(case.length, case.schedule.clone());
    LrSchedule::new(&t, case.lr, case.steps_per_epoch, case.objective)
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-12 + 1e-9 * want.abs()
}

fn kind_name(kind: &ScheduleKind) -> &'static str {
    match kind {
        ScheduleKind::Constant => "constant",
        ScheduleKind::Linear { .. } => "linear",
        ScheduleKind::Cosine { .. } => "cosine",
        ScheduleKind::CosineWithRestarts { .. } => "cosine-with-restarts",
        ScheduleKind::Polynomial { .. } => "polynomial",
        ScheduleKind::Exponential { .. } => "exponential",
        ScheduleKind::InverseSqrt { .. } => "inverse-sqrt",
        ScheduleKind::Step { .. } => "step",
        ScheduleKind::MultiStep { .. } => "multi-step",
        ScheduleKind::CosineAnnealing { .. } => "cosine-annealing",
        ScheduleKind::CosineWarmRestarts { .. } => "cosine-warm-restarts",
        ScheduleKind::OneCycle { .. } => "one-cycle",
        ScheduleKind::ReduceOnPlateau { .. } => "reduce-on-plateau",
    }
}

/// Every kind with settings inside the schema's ranges.
fn every_kind() -> Vec<ScheduleKind> {
    vec![
        ScheduleKind::Constant,
        ScheduleKind::Linear { min_lr_ratio: 0.1 },
        ScheduleKind::Cosine { min_lr_ratio: 0.0 },
        ScheduleKind::CosineWithRestarts {
            cycles: 3,
            min_lr_ratio: 0.2,
        },
        ScheduleKind::Polynomial {
            power: 2.0,
            end_lr: 1e-7,
        },
        ScheduleKind::Exponential { gamma: 0.999 },
        ScheduleKind::InverseSqrt { timescale: None },
        ScheduleKind::Step {
            step_size: 3,
            gamma: 0.1,
        },
        ScheduleKind::MultiStep {
            milestones: vec![2, 5],
            gamma: 0.1,
        },
        ScheduleKind::CosineAnnealing {
            t_max: None,
            eta_min: 0.0,
        },
        ScheduleKind::CosineWarmRestarts {
            t_0: 2,
            t_mult: 2,
            eta_min: 0.0,
        },
        ScheduleKind::OneCycle {
            max_lr: None,
            pct_start: 0.3,
            anneal: Anneal::Cos,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: true,
        },
        ScheduleKind::ReduceOnPlateau {
            mode: None,
            factor: 0.1,
            patience: 0,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        },
    ]
}

#[test]
fn every_case_matches_the_reference() {
    let cases = reference();
    assert!(cases.len() > 40, "the reference lost its cases");
    let mut failures = Vec::new();
    for case in &cases {
        let mut s = schedule_of(case);
        assert_eq!(
            s.total_steps(),
            case.total_steps,
            "{}: total steps",
            case.name
        );
        assert_eq!(s.warmup_steps(), case.warmup_steps, "{}: warmup", case.name);
        assert_eq!(
            case.lrs.len(),
            case.total_steps,
            "{}: reference length",
            case.name
        );
        for (k, &want) in (1..).zip(&case.lrs) {
            let got = s.lr(k);
            if !close(got, want) {
                failures.push(format!("{} step {k}: {got} != {want}", case.name));
            }
            for &(_, value) in case.observations.iter().filter(|o| o.0 == k) {
                s.observe(k, value);
            }
        }
        // Later evaluations do not change what earlier steps used.
        for (k, &want) in (1..).zip(&case.lrs) {
            if !close(s.lr(k), want) {
                failures.push(format!("{} step {k} after all evaluations", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_reference_covers_every_kind_with_and_without_warmup() {
    let cases = reference();
    let warmed = |c: &Case| {
        let s = schedule_of(c);
        s.warmup_steps() > 0
    };
    for kind in every_kind() {
        let name = kind_name(&kind);
        let of_kind: Vec<&Case> = cases
            .iter()
            .filter(|c| kind_name(&c.schedule.kind) == name)
            .collect();
        assert!(of_kind.iter().any(|c| warmed(c)), "{name} with warmup");
        assert!(of_kind.iter().any(|c| !warmed(c)), "{name} without warmup");
    }
    let intervals: BTreeSet<_> = cases
        .iter()
        .map(|c| format!("{:?}", c.schedule.interval))
        .collect();
    assert_eq!(intervals.len(), 2, "both intervals");
}

#[test]
fn plateau_state_survives_a_checkpoint() {
    let plateaus = reference()
        .into_iter()
        .filter(|c| matches!(c.schedule.kind, ScheduleKind::ReduceOnPlateau { .. }));
    for case in plateaus {
        let observe = |s: &mut LrSchedule, steps: std::ops::RangeInclusive<usize>| {
            for &(step, value) in &case.observations {
                if steps.contains(&step) {
                    s.observe(step, value);
                }
            }
        };
        let half = case.total_steps / 2;
        let mut whole = schedule_of(&case);
        observe(&mut whole, 1..=half);
        // Through text, as a checkpoint stores it.
        let saved = serde_json::to_string(&whole.state()).unwrap();
        let mut resumed = schedule_of(&case);
        resumed
            .load_state(&serde_json::from_str(&saved).unwrap())
            .unwrap();
        observe(&mut whole, half + 1..=case.total_steps);
        observe(&mut resumed, half + 1..=case.total_steps);
        for k in 1..=case.total_steps {
            assert_eq!(resumed.lr(k), whole.lr(k), "{} step {k}", case.name);
        }
        assert_eq!(resumed.state(), whole.state(), "{}", case.name);
    }
}

#[test]
fn plateau_state_keeps_infinities() {
    let kind = every_kind().pop().unwrap();
    let t = train(Length::Steps(10), schedule(Interval::Step, None, kind));
    let mut s = LrSchedule::new(&t, 0.1, 5, Direction::Minimize);
    s.observe(1, f64::NEG_INFINITY);
    s.observe(2, f64::NAN);
    let saved = serde_json::to_string(&s.state()).unwrap();
    let mut resumed = LrSchedule::new(&t, 0.1, 5, Direction::Minimize);
    resumed
        .load_state(&serde_json::from_str(&saved).unwrap())
        .unwrap();
    // Nothing beats -inf: with patience 0 every later evaluation reduces the lr.
    s.observe(3, -1e300);
    resumed.observe(3, -1e300);
    assert_eq!(resumed.lr(4), s.lr(4));
    assert!(close(s.lr(4), 0.1 * 0.1 * 0.1), "{}", s.lr(4));
}

#[test]
fn only_plateau_keeps_state() {
    for kind in every_kind() {
        let plateau = matches!(kind, ScheduleKind::ReduceOnPlateau { .. });
        let t = train(Length::Steps(20), schedule(Interval::Step, None, kind));
        let mut s = LrSchedule::new(&t, 0.1, 4, Direction::Maximize);
        let before: Vec<f64> = (1..=20).map(|k| s.lr(k)).collect();
        for k in 1..=10 {
            s.observe(k, -(k as f64));
        }
        let after: Vec<f64> = (1..=20).map(|k| s.lr(k)).collect();
        assert_eq!(before == after, !plateau, "{}", kind_name(&t.schedule.kind));
        assert_eq!(s.state().is_null(), !plateau);
        assert!(
            s.load_state(&serde_json::json!({"best": 1})).is_err(),
            "{}: a foreign state is refused",
            kind_name(&t.schedule.kind)
        );
        assert_eq!(s.load_state(&serde_json::Value::Null).is_ok(), !plateau);
    }
}

fn schedule(interval: Interval, warmup: Option<Warmup>, kind: ScheduleKind) -> Schedule {
    Schedule {
        interval,
        warmup,
        kind,
    }
}

fn assert_finite(t: &spec::Train, steps_per_epoch: usize) {
    let mut s = LrSchedule::new(t, 1e-3, steps_per_epoch, Direction::Minimize);
    let end = s.total_steps().min(1_000) + 20;
    for k in 0..=end {
        s.observe(k, 1.0);
        let lr = s.lr(k);
        assert!(
            lr.is_finite() && lr >= 0.0,
            "lr({k}) = {lr} for {t:?}, {steps_per_epoch} steps per epoch"
        );
    }
    for k in [usize::MAX / 2, usize::MAX - 1, usize::MAX] {
        assert!(s.lr(k).is_finite(), "lr({k}) for {t:?}");
    }
}

#[test]
fn degenerate_runs_stay_finite() {
    let lengths = [
        Length::Steps(0),
        Length::Steps(1),
        Length::Steps(3),
        Length::Epochs(0),
        Length::Epochs(2),
    ];
    let warmups = [
        None,
        Some(Warmup::Steps(0)),
        Some(Warmup::Steps(5)),
        Some(Warmup::Ratio(1.0)),
        Some(Warmup::Ratio(1.5)),
        Some(Warmup::Epochs(2.5)),
    ];
    for kind in every_kind() {
        for interval in [Interval::Step, Interval::Epoch] {
            for length in lengths {
                for warmup in warmups {
                    for steps_per_epoch in [0, 1, 3] {
                        let t = train(length, schedule(interval, warmup, kind.clone()));
                        assert_finite(&t, steps_per_epoch);
                    }
                }
            }
        }
    }
}

#[test]
fn warmup_counts() {
    let cosine = ScheduleKind::Cosine { min_lr_ratio: 0.0 };
    let warmup = |length, interval, warmup, kind: &ScheduleKind, spe| {
        let t = train(length, schedule(interval, warmup, kind.clone()));
        LrSchedule::new(&t, 0.1, spe, Direction::Minimize).warmup_steps()
    };
    let step = Interval::Step;
    // The decaying kinds warm up for 10% unless told otherwise, rounded up; the others do not.
    assert_eq!(warmup(Length::Steps(95), step, None, &cosine, 1), 10);
    assert_eq!(
        warmup(Length::Steps(95), step, None, &ScheduleKind::Constant, 1),
        0
    );
    assert_eq!(
        warmup(
            Length::Epochs(3),
            step,
            Some(Warmup::Epochs(0.5)),
            &cosine,
            7
        ),
        4
    );
    assert_eq!(
        warmup(Length::Steps(10), step, Some(Warmup::Steps(30)), &cosine, 7),
        30
    );
    // By epoch, the warmup is whole epochs.
    let epoch = Interval::Epoch;
    assert_eq!(
        warmup(Length::Steps(40), epoch, Some(Warmup::Steps(6)), &cosine, 5),
        10
    );
    assert_eq!(warmup(Length::Epochs(10), epoch, None, &cosine, 5), 5);
    assert_eq!(
        warmup(
            Length::Epochs(10),
            epoch,
            Some(Warmup::Ratio(-1.0)),
            &cosine,
            5
        ),
        0
    );
    assert_eq!(
        warmup(
            Length::Epochs(10),
            epoch,
            Some(Warmup::Ratio(f64::NAN)),
            &cosine,
            5
        ),
        0
    );
}

#[test]
fn plan_shows_the_warmup_or_how_it_follows_from_the_data() {
    let planned = |length, interval, warmup, kind: ScheduleKind| {
        xp::train::schedule::planned_warmup(&train(length, schedule(interval, warmup, kind)))
    };
    let cosine = || ScheduleKind::Cosine { min_lr_ratio: 0.0 };
    let step = Interval::Step;
    assert_eq!(planned(Length::Steps(95), step, None, cosine()), Ok(10));
    assert_eq!(
        planned(Length::Epochs(3), step, None, cosine()),
        Err("10% of the steps".to_owned())
    );
    assert_eq!(
        planned(Length::Steps(95), step, Some(Warmup::Epochs(0.5)), cosine()),
        Err("0.5 epochs".to_owned())
    );
    assert_eq!(
        planned(Length::Epochs(3), step, None, ScheduleKind::Constant),
        Ok(0)
    );
    assert_eq!(
        planned(Length::Epochs(3), step, Some(Warmup::Steps(7)), cosine()),
        Ok(7)
    );
    assert_eq!(
        planned(Length::Epochs(3), step, Some(Warmup::Ratio(0.05)), cosine()),
        Err("5% of the steps".to_owned())
    );
}

proptest! {
    #[test]
    fn any_counts_stay_finite(
        kind in proptest::sample::select(every_kind()),
        steps in prop_oneof![0usize..5_000, Just(usize::MAX)],
        by_epochs in any::<bool>(),
        by_epoch_interval in any::<bool>(),
        warmup in prop_oneof![
            Just(None),
            (0usize..10_000).prop_map(|w| Some(Warmup::Steps(w))),
            (0.0f64..2.0).prop_map(|r| Some(Warmup::Ratio(r))),
            (0.0f64..20.0).prop_map(|e| Some(Warmup::Epochs(e))),
        ],
        steps_per_epoch in prop_oneof![0usize..100, Just(usize::MAX)],
    ) {
        let length = if by_epochs { Length::Epochs(steps) } else { Length::Steps(steps) };
        let interval = if by_epoch_interval { Interval::Epoch } else { Interval::Step };
        assert_finite(&train(length, schedule(interval, warmup, kind)), steps_per_epoch);
    }
}

/// The warmup a schedule written as `kind` resolves to, with `extra` properties.
fn resolved_warmup(kind: &str, extra: &str) -> (Option<Warmup>, usize) {
    let text = format!(
        r#"experiment "w" {{
    model "mlp" {{ hidden 4 }}
    data "regression" features=2 samples=16
    train {{
        steps 20
        batch-size 4
        optimizer "sgd" lr=0.1
        schedule "{kind}" {extra}
    }}
}}"#
    );
    let checked = xp::front::validate_text("w.kdl", &text);
    assert!(!checked.diags.has_errors(), "{kind} {extra}");
    assert_eq!(checked.plans.len(), 1, "{kind} {extra}");
    let run = &checked.plans[0].runs[0].config;
    let first_lr = LrSchedule::new(&run.train, 0.1, 4, Direction::Minimize).lr(1);
    let warmup = xp::train::schedule::planned_warmup(&run.train).expect("steps are fixed");
    assert_eq!(first_lr == 0.0, warmup > 0, "{kind} {extra}");
    (run.train.schedule.warmup, warmup)
}

#[test]
fn pytorch_names_keep_pytorchs_warmup() {
    // torch's ExponentialLR trains at lr from the first step; xp's own `exponential` warms up.
    assert_eq!(
        resolved_warmup("ExponentialLR", ""),
        (Some(Warmup::Steps(0)), 0)
    );
    assert_eq!(resolved_warmup("exponential", ""), (None, 2));
    // A warmup the user writes wins over the one the name implies, in any of its forms.
    assert_eq!(
        resolved_warmup("ExponentialLR", "warmup-ratio=0.25"),
        (Some(Warmup::Ratio(0.25)), 5)
    );
    assert_eq!(
        resolved_warmup("ExponentialLR", "warmup-steps=3"),
        (Some(Warmup::Steps(3)), 3)
    );
    // The other PyTorch names never warmed up.
    for kind in [
        "StepLR step-size=5",
        "CosineAnnealingLR",
        "MultiStepLR { milestones 5; }",
    ] {
        let (name, extra) = kind.split_once(' ').unwrap_or((kind, ""));
        assert_eq!(resolved_warmup(name, extra).1, 0, "{kind}");
    }
}

#[test]
fn the_reference_states_every_kinds_default_warmup() {
    let schema = xp::front::schema::experiment();
    let train = schema.document.node("experiment").map(|e| schema.body(e));
    let schedule = train
        .and_then(|b| b.node("train"))
        .map(|t| schema.body(t))
        .and_then(|b| b.node("schedule"))
        .map(|s| schema.body(s))
        .expect("the schema has train.schedule");
    for kind in every_kind() {
        let name = kind_name(&kind);
        let variant = schedule.variant(name).expect("every kind is a variant");
        let description = variant.body.description.as_deref().unwrap_or_default();
        let warms = description.contains("Warms up for 10% of the steps unless told otherwise");
        let states = warms
            || description.contains("No warmup unless told otherwise")
            || description.contains("takes no other");
        assert!(states, "`{name}` does not state its default warmup");
        assert_eq!(warms, kind.warms_up_by_default(), "`{name}`: {description}");
    }
}
