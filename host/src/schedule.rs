//! Schedules over the steps of a stage: DNAL's delta and the learning rate.

use serde::{Deserialize, Serialize};

/// `delta` grows exponentially from `start` at the stage's first step to `end` at its last (the
/// paper's schedule; budget mode steers delta with [`LandingDelta`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeltaSchedule {
    /// delta at the first step (the paper: 1).
    pub start: f64,
    /// delta at the last step (the paper: 1e4, where the sigmoid is practically a step).
    pub end: f64,
    /// Steps in the stage.
    pub steps: usize,
}

impl DeltaSchedule {
    /// delta at step `step` (0-based); constant past the last step.
    pub fn at(&self, step: usize) -> f64 {
        if self.steps <= 1 {
            return self.end;
        }
        let t = step.min(self.steps - 1) as f64 / (self.steps - 1) as f64;
        self.start * (self.end / self.start).powf(t)
    }
}

/// The largest `|delta * s|` a gate may reach while [`LandingDelta`] is steering: `sigmoid(8)`
/// is 0.9997, its slope 0.13% of the slope at 0. A layer is scaled into the bound, so only its
/// outermost gate sits there, and the rest keep their spacing.
///
/// At 4 the gates were packed into a layer too thin around zero, where they flip with the
/// batch: off the band, at delta 100 and past it, the cost moved by a median 7.9% a step (90th
/// percentile 35%) over 19 short vgg-small, ResNet-20 and MobileNetV2 stages; at 8, by 4.3%
/// (16%). Spread wider, the gates land within 5% of the budget in all 18 of those stages that
/// bind, against 17, and settle in the band (delta at 1e4) in 17 of 19, against 15.
pub const REVERSIBLE_LOGIT: f64 = 8.0;

/// Budget mode's delta: it grows by `factor` per step while the binarised network (the gates'
/// signs) costs within `band` of the target (on its running mean), and off the band (over it, or
/// under it once it has reached the band) it is held, or backs off by `factor` per step where it
/// had grown past `approach`. A gate can change its decision only while `|delta * s|` is small:
/// with the paper's schedule delta outgrew lambda_a's controller and froze the decisions up to +65%
/// over the budget (issue 16); held, the gates stay movable until the controller has brought them
/// back. Held past the approach was not enough: gates that overshot the budget after reaching it
/// were pushed closed to `|delta * s|` of 4 * delta / approach (with a bound of logit 4), up to
/// 10 at delta 250, fell under the band and stayed there (vgg-small at 60% of its MACs, 21%
/// under); backed off to the approach's delta they are within `REVERSIBLE_LOGIT` again.
///
/// Under the budget at the start (the gates start at `s = 0`, all closed) delta grows all the
/// same, up to `approach`: at small delta the data's push on the gates is too weak to open
/// channels (held at 1, the gates stayed at 10-40% of the budget for the whole stage), while
/// unbounded growth froze MobileNetV2's gates 25% under the budget before lambda_a had come
/// down.
///
/// The band is tested on the cost's running mean ([`LandingDelta::level`]), not on the last
/// step's: near the budget a heavily pruned network's cost jumps by 10-20% from one step to
/// the next (a few channels of an early layer flip with the batch). Tested step by step, delta
/// stalled on the jumps alone: vgg-small at 20 ms cost 0.99x the budget on average over 14
/// steps, 7 of them off the band, and delta went from 45 to 114 where in the band it would
/// have grown 5x.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LandingDelta {
    /// delta now.
    pub delta: f64,
    /// Growth per step in the band, and the back-off per step off it past `approach`.
    pub factor: f64,
    /// delta's ceiling (the paper: 1e4).
    pub end: f64,
    /// How far off the target the gates may be before delta is held, as a share of it.
    pub band: f64,
    /// Whether the gates have cost at least `1 - band` times the target yet.
    pub reached: bool,
    /// The most delta grows before the gates first reach the band.
    pub approach: f64,
    /// Whether the last step left the gates off the band (over or under it): the controller
    /// is still steering, and [`LandingDelta::reversible_bound`] keeps their decisions
    /// movable.
    #[serde(default)]
    pub steering: bool,
    /// The cost ratio's running mean ([`LEVEL_WEIGHT`] on the newest step), which the band
    /// is tested on; none before the first step.
    #[serde(default)]
    pub level: Option<f64>,
}

/// The weight of the newest step in [`LandingDelta::level`]: a jump of one step moves the
/// level by a fifth of it, a change that lasts reaches it within about ten steps.
pub const LEVEL_WEIGHT: f64 = 0.2;

impl LandingDelta {
    /// delta from `start`, reaching `end` after `ramp_steps` steps not held, and at most
    /// `approach` before the gates first reach the band.
    pub fn new(start: f64, end: f64, ramp_steps: usize, band: f64, approach: f64) -> Self {
        Self {
            delta: start,
            factor: (end / start).powf(1.0 / ramp_steps.max(1) as f64),
            end,
            band,
            reached: false,
            approach,
            steering: true,
            level: None,
        }
    }

    /// While the gates are off the band, the bound on `|s|` (a layer's gates are scaled into it,
    /// keeping their order and spacing) that keeps every gate's decision reversible up to the
    /// approach's delta: `|delta * s| <= REVERSIBLE_LOGIT`, so that the data and the architecture
    /// loss can move a gate back across zero. Unbounded, a hard early push (lambda_a's start too
    /// high) drove MobileNetV2's closed gates to `delta * s` near -50, where nothing moves them
    /// again: the controller brought lambda_a down 500x and the gates stayed 14% under a 40%
    /// budget.
    ///
    /// Past the approach's delta the bound stays `REVERSIBLE_LOGIT / approach`: a bound
    /// shrinking with delta would hold every gate within a step of zero once decisions
    /// should settle, and one step then flipped many at once (vgg-small on a 20 ms budget
    /// ended 17% under it). Instead delta backs off to the approach's while the gates stay
    /// off the band ([`LandingDelta::after_step`]). In the band the gates are free, and
    /// decisions freeze as delta grows, as in the paper.
    pub fn reversible_bound(&self) -> Option<f64> {
        self.steering
            .then(|| REVERSIBLE_LOGIT / self.delta.min(self.approach))
    }

    /// Whether the gates' answer to lambda_a is still speeding up: delta grows towards the
    /// approach, and a step moves a gate by about delta² in `delta * s` (the gradient on `s`
    /// scales with delta), so a gate held at the reversible bound crosses zero in steps that
    /// fall as 1/delta². Their climb then understates where they are going; once delta
    /// stops growing it is their answer to this lambda_a.
    pub fn quickening(&self) -> bool {
        !self.reached && self.delta < self.approach
    }

    /// How fully the gates answer lambda_a now, as a share of their answer at the approach's
    /// delta: `(delta / approach)²` while it [quickens](Self::quickening), else 1. The budget
    /// controller moves lambda_a by this share ([`crate::budget::BudgetControl::update`]).
    pub fn response(&self) -> f64 {
        if self.quickening() {
            (self.delta / self.approach).powi(2)
        } else {
            1.0
        }
    }

    /// After a step whose binarised network costs `cost_ratio` times the target. The gates
    /// have reached the band once a step's cost does; whether they are off it is the
    /// [level](Self::level)'s to say.
    pub fn after_step(&mut self, cost_ratio: f64) {
        self.reached |= cost_ratio >= 1.0 - self.band;
        let level = self.level.map_or(cost_ratio, |level| {
            level + LEVEL_WEIGHT * (cost_ratio - level)
        });
        self.level = Some(level);
        let (over, under) = (level > 1.0 + self.band, level < 1.0 - self.band);
        self.steering = over || under;
        // Off the band: over it, or under it once the gates have reached it.
        let off = over || (self.reached && under);
        if off {
            // Back towards the approach's delta, where the gates held at the reversible bound
            // are within `REVERSIBLE_LOGIT` of their sigmoid's middle again.
            if self.delta > self.approach {
                self.delta = (self.delta / self.factor).max(self.approach);
            }
        } else {
            let ceiling = if self.reached {
                self.end
            } else {
                self.approach.max(self.delta)
            };
            self.delta = (self.delta * self.factor).min(ceiling);
        }
    }
}

/// Cosine annealing from `base` to 0 over `steps`, after a linear warm-up of `warmup` steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    /// The peak learning rate.
    pub base: f64,
    /// Steps in the stage.
    pub steps: usize,
    /// Warm-up steps at the start.
    pub warmup: usize,
}

impl CosineSchedule {
    /// The learning rate at step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.base * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        0.5 * self.base * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_schedule_hits_1_and_1e4() {
        let s = DeltaSchedule {
            start: 1.0,
            end: 1e4,
            steps: 1000,
        };
        assert_eq!(s.at(0), 1.0);
        assert!((s.at(999) - 1e4).abs() < 1e-9, "{}", s.at(999));
        assert_eq!(s.at(5000), s.at(999));
        // Exponential: equal ratios over equal steps, halfway at 100.
        assert!((s.at(333) / s.at(0) - s.at(666) / s.at(333)).abs() < 1e-9);
        let mid = DeltaSchedule { steps: 3, ..s };
        assert!((mid.at(1) - 100.0).abs() < 1e-9);
        let one = DeltaSchedule { steps: 1, ..s };
        assert_eq!(one.at(0), 1e4);
    }

    #[test]
    fn landing_delta_backs_off_to_the_approach_off_the_budget() {
        // A cost that has been `ratio` for a while: its level is the ratio.
        fn steady(d: &mut LandingDelta, ratio: f64) {
            d.level = Some(ratio);
            d.after_step(ratio);
        }
        let mut d = LandingDelta::new(1.0, 1e4, 4, 0.05, 50.0);
        // Under the budget before the gates first reached it, it grows (10x per step here),
        // up to the approach's ceiling: the gates' answer quickens until then.
        assert!(d.quickening());
        steady(&mut d, 0.2);
        assert!((d.delta - 10.0).abs() < 1e-9, "{}", d.delta);
        assert!(d.quickening());
        steady(&mut d, 0.2);
        assert!((d.delta - 50.0).abs() < 1e-9, "{}", d.delta);
        assert!(!d.quickening());
        steady(&mut d, 0.3);
        assert!((d.delta - 50.0).abs() < 1e-9, "{}", d.delta);
        d.delta = 10.0;
        // Within the band it grows.
        steady(&mut d, 1.05);
        assert!((d.delta - 100.0).abs() < 1e-9, "{}", d.delta);
        // Over the band it backs off, a step's factor at a time, to the approach's delta
        // (50 here), and stays there however long; under it too, now that the gates have
        // reached the budget once.
        d.delta = 1e3;
        steady(&mut d, 1.5);
        assert!((d.delta - 100.0).abs() < 1e-9, "{}", d.delta);
        for ratio in [1.06, 1.5, 0.94, 0.5] {
            steady(&mut d, ratio);
            assert!((d.delta - 50.0).abs() < 1e-9, "{ratio}: {}", d.delta);
        }
        d.delta = 1e3;
        steady(&mut d, 0.5);
        assert!((d.delta - 100.0).abs() < 1e-9, "{}", d.delta);
        // Under the approach's delta it is held off the band, not raised to it (and the
        // gates' answer no longer quickens, though delta is under the approach's).
        d.delta = 20.0;
        steady(&mut d, 0.5);
        assert!((d.delta - 20.0).abs() < 1e-9, "{}", d.delta);
        assert!(!d.quickening());
        d.delta = 100.0;
        // Off the band the gates are held reversible: |delta * s| <= REVERSIBLE_LOGIT up to
        // the approach's delta (50 here), then by that delta's bound.
        assert_eq!(d.reversible_bound(), Some(REVERSIBLE_LOGIT / 50.0));
        // Back in the band it grows again, and stops at the end.
        for _ in 0..5 {
            steady(&mut d, 0.96);
        }
        assert_eq!(d.delta, 1e4);
        assert_eq!(d.reversible_bound(), None);
        // Under the band before the gates first reached it, they are held reversible too;
        // past the approach's delta, by the approach's bound.
        let mut fresh = LandingDelta::new(1.0, 1e4, 4, 0.05, 50.0);
        assert_eq!(fresh.reversible_bound(), Some(REVERSIBLE_LOGIT));
        fresh.delta = 1e3;
        assert_eq!(fresh.reversible_bound(), Some(REVERSIBLE_LOGIT / 50.0));
    }

    #[test]
    fn landing_delta_tests_the_band_on_the_cost_level() {
        let mut d = LandingDelta::new(1.0, 1e4, 4, 0.05, 50.0);
        // The first step's cost is its level.
        d.after_step(1.0);
        assert_eq!(d.level, Some(1.0));
        assert!((d.delta - 10.0).abs() < 1e-9, "{}", d.delta);
        // One step 20% over the budget moves the level a fifth of the way (to 1.04): still in
        // the band, so delta grows on.
        d.after_step(1.2);
        assert!((d.level.unwrap() - 1.04).abs() < 1e-12);
        assert!((d.delta - 100.0).abs() < 1e-9, "{}", d.delta);
        assert!(!d.steering);
        // Over it for good, the level leaves the band within a step more, and delta backs
        // off.
        d.after_step(1.2);
        assert!(d.level.unwrap() > 1.05);
        assert!((d.delta - 50.0).abs() < 1e-9, "{}", d.delta);
        assert!(d.steering);
    }

    #[test]
    fn the_gates_answer_in_part_while_delta_quickens() {
        let mut d = LandingDelta::new(1.0, 1e4, 4, 0.05, 50.0);
        // (delta / approach)²: 1/2500 at the start, 1/25 at delta 10.
        assert!((d.response() - 1.0 / 2500.0).abs() < 1e-12);
        d.after_step(0.2);
        assert!((d.response() - 1.0 / 25.0).abs() < 1e-12);
        // At the approach's delta, or once the gates have reached the band, in full.
        d.after_step(0.2);
        assert_eq!(d.response(), 1.0);
        let mut reached = LandingDelta::new(1.0, 1e4, 4, 0.05, 50.0);
        reached.after_step(0.96);
        reached.delta = 10.0;
        assert_eq!(reached.response(), 1.0);
    }

    #[test]
    fn cosine_warms_up_then_decays_to_zero() {
        let s = CosineSchedule {
            base: 0.1,
            steps: 100,
            warmup: 10,
        };
        assert!((s.at(0) - 0.01).abs() < 1e-12);
        assert!((s.at(9) - 0.1).abs() < 1e-12);
        assert!((s.at(10) - 0.1).abs() < 1e-12);
        assert!(s.at(55) < s.at(30));
        assert!(s.at(100) < 1e-12);
    }
}
