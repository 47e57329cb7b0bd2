//! The channels the gate stage keeps: DNAL's `s > 0`, or in budget mode the threshold on `s`
//! that lands at or under the budget. With a board, the fitted network is built and measured
//! there before finetuning (latency and memory depend on the architecture, not on the
//! weights): a latency budget is held on the measurement, not on the table's prediction
//! ([`LatencyLanding`]), and where the firmware outgrows the board's flash or RAM (under any
//! budget), the fit aims lower and is built again.

use burn::module::Module;
use dnal_models::{ChannelMasks, GatedNet, prune_channels};

use super::run::{Search, cost_text};
use crate::budget::{Budget, BudgetFit, fit_to_budget};
use crate::error::SearchError;
use crate::export::build_export;
use crate::progress::SearchObserver;
use crate::report::{BudgetReport, FitMeasurement, OversizedFit};
use dnal_firmware::DeployError;

/// Fits built for the board before the search keeps the best one under a latency budget, or
/// gives up on it when none measured under. One or two suffice while the table's error is
/// steady (it stays under 1% on QEMU once its measurements correct it).
pub const MAX_MEASURED_FITS: usize = 6;

/// A fit measured more than this share under a latency budget aims higher: a table that
/// predicts high (a new one, before its measurements correct it) would otherwise leave that
/// much of the budget unspent (a new int8 table predicted 15.0 ms for a MobileNetV2 that ran
/// in 14.36). The board's instruction counts repeat exactly, so 1% is not noise.
pub const SPENT_WITHIN: f64 = 0.01;

impl Search {
    /// The channels to keep after the gate stage, and in budget mode how they met the budget.
    pub(super) fn final_masks(
        &mut self,
        net: &GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<(ChannelMasks, Option<BudgetReport>), SearchError> {
        let Some(budget) = self.budget() else {
            return Ok((ChannelMasks::from_gates(net), None));
        };
        let estimate = self.estimate(budget);
        let mut report = BudgetReport {
            budget,
            lambda: self.state.gate_lambda.unwrap_or(self.config().lambda),
            fit: BudgetFit::default(),
            measured_fits: Vec::new(),
            oversized_fits: Vec::new(),
            trace: self.state.gate_trace.clone(),
        };
        let mut landing = match budget {
            Budget::LatencyMs(budget_ms) => Some(LatencyLanding::new(budget_ms)),
            _ => None,
        };
        // The fits measured for a latency budget, as `report.measured_fits`: a fit aimed
        // elsewhere that keeps the same channels is not built again.
        let mut fits: Vec<(ChannelMasks, BudgetFit)> = Vec::new();
        let mut target = budget.target();
        let mut attempts = 0;
        let (masks, fit) = loop {
            let (masks, fit) = fit_to_budget(net, estimate.as_ref(), target)?;
            // With a board every fit is built for it before finetuning: a latency budget
            // holds on the measurement, and any budget must leave a network that fits the
            // board's memory (a FLOPs budget says nothing of flash), not one refused at the
            // deploy after hours of finetuning.
            if self.latency.is_none() {
                break (masks, fit);
            }
            attempts += 1;
            let earlier = fits.iter().position(|(kept, _)| *kept == masks);
            let measured_ms = match earlier {
                Some(index) => report.measured_fits[index].measured_ms,
                None => match self.measure_fit(net, &masks, observer) {
                    Ok(measured_ms) => measured_ms,
                    // Aiming higher outgrew the board: the best fit under the budget stands.
                    Err(SearchError::Deploy(DeployError::OverBudget { .. }))
                        if landing.as_ref().is_some_and(|l| l.best.is_some()) =>
                    {
                        let index = landing.and_then(|l| l.best).expect("checked").0;
                        break fits.swap_remove(index);
                    }
                    // A network that spends a loose budget can outgrow the board's flash or
                    // RAM: aim lower by the share that does not fit, and build again.
                    Err(SearchError::Deploy(DeployError::OverBudget {
                        board,
                        memory,
                        needed,
                        available,
                        ..
                    })) if attempts < MAX_MEASURED_FITS => {
                        report.oversized_fits.push(OversizedFit {
                            target,
                            cost: fit.cost,
                            unit: estimate.unit().into(),
                            memory: memory.to_string(),
                            needed,
                            available,
                        });
                        target = target_that_fits(fit.cost, needed, available);
                        observer.message(&format!(
                            "fit {attempts} does not fit {board}: its {memory} needs {needed} \
                             bytes, the board has {available}; aiming the fit lower, at {}",
                            cost_text(target, estimate.unit())
                        ));
                        continue;
                    }
                    Err(err) => return Err(err),
                },
            };
            let Some(landing) = &mut landing else {
                break (masks, fit);
            };
            let measured = FitMeasurement {
                target_ms: target,
                predicted_ms: fit.cost,
                measured_ms,
            };
            let index = earlier.unwrap_or_else(|| {
                observer.message(&format!(
                    "fit {attempts} measured on the board: {:.3} ms (predicted {:.3} ms, aimed at {:.3} ms) for a budget of {} ms",
                    measured.measured_ms, measured.predicted_ms, measured.target_ms, landing.budget_ms
                ));
                report.measured_fits.push(measured.clone());
                fits.push((masks, fit));
                fits.len() - 1
            });
            match landing.after(index, &measured, attempts)? {
                Landing::Keep(index) => break fits.swap_remove(index),
                Landing::Aim(next) => {
                    if next > target {
                        observer.message(&format!(
                            "fit {attempts} leaves {:.1}% of the budget unspent; aiming higher, at {}",
                            100.0 * (1.0 - measured_ms / landing.budget_ms),
                            cost_text(next, estimate.unit())
                        ));
                    }
                    target = next;
                }
            }
        };
        // How far the gate stage landed is measured from the budget, whatever the fit
        // aimed at after measuring.
        let landing_pct = 100.0 * (fit.cost_at_zero / budget.target() - 1.0);
        report.fit = BudgetFit { landing_pct, ..fit };
        Ok((masks, Some(report)))
    }

    /// The network `masks` keep of `net` (weights as after the gate stage), built for the
    /// board of the search's latency table and measured there: its latency in ms.
    fn measure_fit(
        &mut self,
        net: &GatedNet,
        masks: &ChannelMasks,
        observer: &mut dyn SearchObserver,
    ) -> Result<f64, SearchError> {
        let pruned = prune_channels(&net.valid(), masks)?;
        let export = build_export(
            &pruned,
            &self.parent.plan,
            masks,
            &self.dataset,
            &self.search_info(),
        )?;
        let report = self
            .measure(
                &export,
                None,
                "the fitted network before finetuning",
                observer,
            )?
            .expect("the search has a board, so a latency table");
        Ok(report.measured_ms)
    }
}

/// The cost to aim at after a fit of cost `cost` whose firmware needed `needed` bytes of a
/// memory that holds `available`: the cost scaled by the share that fits, 3% under (the
/// firmware's code does not shrink with the network).
fn target_that_fits(cost: f64, needed: u64, available: u64) -> f64 {
    cost * (available as f64 / needed as f64) * 0.97
}

/// The search for the fit that spends a latency budget on the board, in the predictions the
/// fits aim at (the table's error is found by measuring). A fit over the budget aims lower by
/// the ratio it measured over; a fit more than [`SPENT_WITHIN`] under it aims higher by the
/// ratio it measured under; once fits measured on both sides, the next aims between the best
/// under and the lowest over. The fit kept is the one measured closest under the budget, so
/// the budget holds on the measurement, always.
#[derive(Clone, Debug)]
struct LatencyLanding {
    budget_ms: f64,
    /// The fit measured closest under the budget: its index among the fits measured, and
    /// its measurement.
    best: Option<(usize, FitMeasurement)>,
    /// The lowest target whose fit measured over the budget.
    over: Option<f64>,
}

/// What to do after measuring a fit.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Landing {
    /// Keep the fit of this index.
    Keep(usize),
    /// Fit again, at or under this prediction.
    Aim(f64),
}

impl LatencyLanding {
    fn new(budget_ms: f64) -> Self {
        Self {
            budget_ms,
            best: None,
            over: None,
        }
    }

    /// After the `attempts`-th fit (the `index`-th built) measured `measured`: the fit to keep,
    /// or the prediction to aim the next at; the error that the table no longer matches the
    /// board once [`MAX_MEASURED_FITS`] fits all measured over the budget.
    fn after(
        &mut self,
        index: usize,
        measured: &FitMeasurement,
        attempts: usize,
    ) -> Result<Landing, SearchError> {
        let budget_ms = self.budget_ms;
        // Aiming between found no channel more than the best keeps.
        if let Some((best, _)) = &self.best
            && *best == index
        {
            return Ok(Landing::Keep(index));
        }
        if measured.measured_ms <= budget_ms {
            if self
                .best
                .as_ref()
                .is_none_or(|(_, best)| measured.measured_ms > best.measured_ms)
            {
                self.best = Some((index, measured.clone()));
            }
        } else {
            self.over = Some(
                self.over
                    .map_or(measured.target_ms, |o| o.min(measured.target_ms)),
            );
        }
        match (&self.best, self.over) {
            (Some((best, m)), _) if m.measured_ms >= budget_ms * (1.0 - SPENT_WITHIN) => {
                Ok(Landing::Keep(*best))
            }
            (Some((best, _)), _) if attempts >= MAX_MEASURED_FITS => Ok(Landing::Keep(*best)),
            (Some((_, best)), Some(over)) => Ok(Landing::Aim(0.5 * (best.target_ms + over))),
            // The table was high by predicted/measured: aim that much higher.
            (Some((_, best)), None) => Ok(Landing::Aim(next_target(best, budget_ms))),
            (None, _) if attempts >= MAX_MEASURED_FITS => Err(SearchError::InvalidOption {
                option: "--latency-budget-ms",
                value: budget_ms.to_string(),
                reason: format!(
                    "{MAX_MEASURED_FITS} fitted networks all measured over it on the board (the \
                     last {:.3} ms against a prediction of {:.3} ms): the latency table no longer \
                     matches the board; profile it again (`dnal profile`)",
                    measured.measured_ms, measured.predicted_ms
                ),
            }),
            // The table was low by measured/predicted: aim that much lower.
            (None, _) => Ok(Landing::Aim(next_target(measured, budget_ms))),
        }
    }
}

/// The prediction to aim at after a fit that measured `last`: its own prediction scaled by
/// budget / measured (lower after a fit over the budget, higher after one under it), a
/// little under so that the fit moves even when the ratio is tiny.
fn next_target(last: &FitMeasurement, budget_ms: f64) -> f64 {
    last.predicted_ms * (budget_ms / last.measured_ms) * (1.0 - 1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fit_too_big_for_the_board_aims_lower_by_the_share_that_does_not_fit() {
        // 1.12 MB of flash for a 1 MB board: the next fit aims at most 1/1.12 of the cost.
        let next = target_that_fits(66.9, 1_118_516, 1_048_576);
        assert!(next < 66.9 * 1_048_576.0 / 1_118_516.0, "{next}");
        assert!(next > 0.9 * 66.9 * 1_048_576.0 / 1_118_516.0, "{next}");
    }

    fn fit(target_ms: f64, predicted_ms: f64, measured_ms: f64) -> FitMeasurement {
        FitMeasurement {
            target_ms,
            predicted_ms,
            measured_ms,
        }
    }

    #[test]
    fn a_fit_within_the_budget_is_kept_and_one_over_it_aims_lower_until_the_last() {
        let mut landing = LatencyLanding::new(40.0);
        assert_eq!(
            landing.after(0, &fit(40.0, 39.9, 39.8), 1).unwrap(),
            Landing::Keep(0)
        );
        let mut landing = LatencyLanding::new(40.0);
        let over = fit(40.0, 39.9, 40.1);
        assert_eq!(
            landing.after(0, &over, 1).unwrap(),
            Landing::Aim(next_target(&over, 40.0))
        );
        for attempt in 2..MAX_MEASURED_FITS {
            assert!(matches!(
                landing.after(attempt - 1, &over, attempt).unwrap(),
                Landing::Aim(_)
            ));
        }
        let err = landing
            .after(MAX_MEASURED_FITS - 1, &over, MAX_MEASURED_FITS)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--latency-budget-ms") && err.contains("profile it again"),
            "{err}"
        );
    }

    #[test]
    fn a_fit_measured_over_the_budget_aims_lower_by_the_tables_error() {
        // The table predicted 39.9 ms, the board measured 40.1 for a 40 ms budget: the next
        // fit must predict at most 39.9 * 40 / 40.1, so a board as far from the table as
        // this one measures at most 40 ms.
        let last = fit(40.0, 39.9, 40.1);
        let next = next_target(&last, 40.0);
        assert!(next < 39.9 * 40.0 / 40.1, "{next}");
        assert!(next > 39.8, "{next}");
        let ratio = last.measured_ms / last.predicted_ms;
        assert!(next * ratio <= 40.0);
    }

    #[test]
    fn a_fit_well_under_the_budget_aims_higher_then_between_and_keeps_the_best_under() {
        // A new int8 table predicted 15.0 ms for a network the board ran in 14.36 (4% under).
        let mut landing = LatencyLanding::new(15.0);
        let first = fit(15.0, 14.998, 14.36);
        let Landing::Aim(higher) = landing.after(0, &first, 1).unwrap() else {
            panic!("a fit 4% under its budget is kept");
        };
        // Higher, by the table's error.
        assert!(higher > 14.998 && higher * first.measured_ms / first.predicted_ms <= 15.0);
        // That one measured over: the next aims between the two.
        let Landing::Aim(between) = landing.after(1, &fit(higher, 15.658, 15.028), 2).unwrap()
        else {
            panic!("a fit over the budget is never kept");
        };
        assert!((between - 0.5 * (15.0 + higher)).abs() < 1e-12, "{between}");
        // Still 2% under: between it and the lowest over.
        let Landing::Aim(next) = landing.after(2, &fit(between, 15.3, 14.7), 3).unwrap() else {
            panic!("2% under is not spent");
        };
        assert!(next > between && next < higher, "{next}");
        // A fit that keeps the same channels as the best: nothing lies between, keep it.
        assert_eq!(
            landing.after(2, &fit(next, 15.3, 14.7), 4).unwrap(),
            Landing::Keep(2)
        );
        // Out of attempts, the best under stands, however far under.
        let mut landing = LatencyLanding::new(15.0);
        landing.after(0, &first, 1).unwrap();
        assert_eq!(
            landing
                .after(1, &fit(higher, 15.6, 15.1), MAX_MEASURED_FITS)
                .unwrap(),
            Landing::Keep(0)
        );
    }
}
