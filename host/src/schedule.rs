//! Schedules over the steps of a stage: DNAL's delta and the learning rate.

/// `delta` grows exponentially from `start` at the stage's first step to `end` at its last,
/// after being held at `start` for the first `hold` steps (budget mode, while lambda_a settles;
/// 0 in the paper's schedule).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeltaSchedule {
    /// delta at the first step (the paper: 1).
    pub start: f64,
    /// delta at the last step (the paper: 1e4, where the sigmoid is practically a step).
    pub end: f64,
    /// Steps in the stage.
    pub steps: usize,
    /// Steps at the start during which delta stays at `start`.
    pub hold: usize,
}

impl DeltaSchedule {
    /// delta at step `step` (0-based); constant past the last step.
    pub fn at(&self, step: usize) -> f64 {
        let ramp = self.steps.saturating_sub(self.hold);
        if ramp <= 1 {
            return if step < self.hold {
                self.start
            } else {
                self.end
            };
        }
        let t = step.saturating_sub(self.hold).min(ramp - 1) as f64 / (ramp - 1) as f64;
        self.start * (self.end / self.start).powf(t)
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
            hold: 0,
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
        // Held at the start, then the same ramp over the remaining steps.
        let held = DeltaSchedule { hold: 200, ..s };
        assert_eq!(held.at(0), 1.0);
        assert_eq!(held.at(199), 1.0);
        assert_eq!(held.at(200), 1.0);
        assert!((held.at(999) - 1e4).abs() < 1e-9);
        assert!(held.at(600) > 1.0 && held.at(600) < 1e4);
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
