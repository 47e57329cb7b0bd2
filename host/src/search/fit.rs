//! The channels the gate stage keeps: DNAL's `s > 0`, or in budget mode the threshold on `s`
//! that lands at or under the budget. With a board, the fitted network is built and measured
//! there before finetuning (latency and memory depend on the architecture, not on the
//! weights): a latency budget is held on the measurement, not on the table's prediction, and
//! while the network measures over it, or its firmware outgrows the board's flash or RAM
//! (under any budget), the fit aims lower and is built again.

use burn::module::Module;
use dnal_models::{ChannelMasks, GatedNet, prune_channels};

use super::run::{Search, cost_text};
use crate::budget::{Budget, BudgetFit, fit_to_budget};
use crate::error::SearchError;
use crate::export::build_export;
use crate::progress::SearchObserver;
use crate::report::{BudgetReport, FitMeasurement, OversizedFit};
use dnal_firmware::DeployError;

/// Fits measured before the search gives up on a latency budget. Each aims the prediction
/// lower by the ratio the last one measured over the budget, so one or two suffice while the
/// table's error is steady (it stays under 1% on QEMU).
pub const MAX_MEASURED_FITS: usize = 6;

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
        let lambda = self.state.gate_lambda.unwrap_or(self.config().lambda);
        let mut target = budget.target();
        let mut measured_fits = Vec::new();
        let mut oversized_fits = Vec::new();
        let mut attempts = 0;
        loop {
            let (masks, fit) = fit_to_budget(net, estimate.as_ref(), target)?;
            // With a board every fit is built for it before finetuning: a latency budget
            // holds on the measurement, and any budget must leave a network that fits the
            // board's memory (a FLOPs budget says nothing of flash), not one refused at the
            // deploy after hours of finetuning.
            if self.latency.is_some() {
                attempts += 1;
                let measured_ms = match self.measure_fit(net, &masks, observer) {
                    Ok(measured_ms) => measured_ms,
                    // A network that spends a loose budget can outgrow the board's flash or
                    // RAM: aim lower by the share that does not fit, and build again.
                    Err(SearchError::Deploy(DeployError::OverBudget {
                        board,
                        memory,
                        needed,
                        available,
                        ..
                    })) if attempts < MAX_MEASURED_FITS => {
                        oversized_fits.push(OversizedFit {
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
                };
                if let Budget::LatencyMs(budget_ms) = budget {
                    let measured = FitMeasurement {
                        target_ms: target,
                        predicted_ms: fit.cost,
                        measured_ms,
                    };
                    measured_fits.push(measured.clone());
                    observer.message(&format!(
                        "fit {attempts} measured on the board: {:.3} ms (predicted {:.3} ms, aimed at {:.3} ms) for a budget of {budget_ms} ms",
                        measured.measured_ms, measured.predicted_ms, measured.target_ms,
                    ));
                    if let Some(lower) = aim_after_measuring(&measured, budget_ms, attempts)? {
                        target = lower;
                        continue;
                    }
                }
            }
            // How far the gate stage landed is measured from the budget, whatever the fit
            // aimed at after a measurement over it.
            let landing_pct = 100.0 * (fit.cost_at_zero / budget.target() - 1.0);
            let report = BudgetReport {
                budget,
                lambda,
                fit: BudgetFit { landing_pct, ..fit },
                measured_fits,
                oversized_fits,
            };
            return Ok((masks, Some(report)));
        }
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

/// After the `attempts`-th fit measured `measured`: `None` when it is at or under
/// `budget_ms`, else the prediction the next fit aims at, or the error that the table no
/// longer matches the board once [`MAX_MEASURED_FITS`] fits all measured over it.
fn aim_after_measuring(
    measured: &FitMeasurement,
    budget_ms: f64,
    attempts: usize,
) -> Result<Option<f64>, SearchError> {
    if measured.measured_ms <= budget_ms {
        return Ok(None);
    }
    if attempts == MAX_MEASURED_FITS {
        return Err(SearchError::InvalidOption {
            option: "--latency-budget-ms",
            value: budget_ms.to_string(),
            reason: format!(
                "{MAX_MEASURED_FITS} fitted networks all measured over it on the board (the last \
                 {:.3} ms against a prediction of {:.3} ms): the latency table no longer matches \
                 the board; profile it again (`dnal profile`)",
                measured.measured_ms, measured.predicted_ms
            ),
        });
    }
    // The table was low by measured/predicted: aim the prediction that much lower.
    Ok(Some(next_target(measured, budget_ms)))
}

/// The prediction to aim at after a fit that measured over `budget_ms`: its own prediction
/// scaled by budget / measured, a little under so that the fit moves even when the ratio is
/// tiny.
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

    #[test]
    fn a_measured_fit_is_kept_under_the_budget_and_aimed_lower_over_it_until_the_last() {
        let fit = |measured_ms| FitMeasurement {
            target_ms: 40.0,
            predicted_ms: 39.9,
            measured_ms,
        };
        assert_eq!(aim_after_measuring(&fit(40.0), 40.0, 1).unwrap(), None);
        let over = fit(40.1);
        assert_eq!(
            aim_after_measuring(&over, 40.0, 1).unwrap(),
            Some(next_target(&over, 40.0))
        );
        let err = aim_after_measuring(&over, 40.0, MAX_MEASURED_FITS)
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
        let last = FitMeasurement {
            target_ms: 40.0,
            predicted_ms: 39.9,
            measured_ms: 40.1,
        };
        let next = next_target(&last, 40.0);
        assert!(next < 39.9 * 40.0 / 40.1, "{next}");
        assert!(next > 39.8, "{next}");
        let ratio = last.measured_ms / last.predicted_ms;
        assert!(next * ratio <= 40.0);
    }
}
