//! The three training stages of DNAL: the weights (gates off), the gates (weights frozen,
//! delta growing), and the finetuning of the pruned network; and the check for a collapsed
//! network.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use dnal_models::{ChannelMasks, GateMode, GatedNet};

use super::epochs::StageRun;
use super::run::Search;
use super::state::Stage;
use crate::arch_cost::CostWeighting;
use crate::budget::{BudgetControl, CostEstimate, LandingTrace};
use crate::config::{GateStageNorm, LrSchedule};
use crate::distill::Distillation;
use crate::error::SearchError;
use crate::progress::SearchObserver;
use crate::schedule::{CosineSchedule, DeltaSchedule, LandingDelta};
use crate::train::GatePenalty;

/// How far off the budget the gates' binarised network may cost before delta is held (budget
/// mode): 5%.
const LANDING_BAND: f64 = 0.05;

/// The most delta grows in budget mode before the gates first reach the budget: vgg-small's
/// and ResNet-20's gates opened up to it by delta 30-45, MobileNetV2's (on data alone) by 20.
const LANDING_APPROACH_DELTA: f64 = 100.0;

/// How fast the gates' cost must rise (a share of the budget over the whole gate stage) to
/// count as climbing towards it, which holds lambda_a ([`BudgetControl::climb`]).
const CLIMB_PER_STAGE: f64 = 0.1;

/// The share of the channels to close for a network of `cost_share` of its parent's cost:
/// cost grows about with the square of the channels kept (a conv's inputs times its outputs),
/// so about `1 - sqrt(cost_share)`, kept within 5-95%.
fn share_to_close(cost_share: f64) -> f64 {
    (1.0 - cost_share.clamp(0.0, 1.0).sqrt()).clamp(0.05, 0.95)
}

/// Batches that measure how hard the data push the gates at the gate stage's start.
const BALANCE_BATCHES: usize = 4;

impl Search {
    /// The weight stage: the parent trained with its gates off (cosine or constant learning
    /// rate, weight decay).
    pub(super) fn weight_stage(
        &mut self,
        net: GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<GatedNet, SearchError> {
        let epochs = self.config().epochs_weights;
        let steps = self.train.num_batches();
        let schedule = CosineSchedule {
            base: self.config().lr,
            steps: epochs * steps,
            warmup: steps.min(epochs * steps / 10),
        };
        let constant = self.config().lr_schedule == LrSchedule::Constant;
        let lr = move |step: usize| {
            if constant {
                schedule.base
            } else {
                schedule.at(step)
            }
        };
        let mode = |_: usize| GateMode::Off;
        let optim = self.sgd(true);
        let run = StageRun {
            stage: Stage::Weights,
            epochs,
            epoch_offset: 0,
            lr: &lr,
            mode: &mode,
            penalty: None,
            distill: None,
        };
        self.run_epochs(run, net.unfreeze().train(), optim, observer)
    }

    /// The gate stage: only the gates learn, under the architecture loss, while delta grows;
    /// in budget mode lambda_a is steered to the budget, and delta is held (or backs off to the
    /// approach's) while the gates are off it ([`LandingDelta`]).
    pub(super) fn gate_stage(
        &mut self,
        net: GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<GatedNet, SearchError> {
        let config = self.config().clone();
        let steps = self.train.num_batches();
        let total = config.epochs_gates * steps;
        let delta = DeltaSchedule {
            start: config.delta_start,
            end: config.delta_end,
            steps: total,
        };
        let budget = self.budget().map(|budget| BudgetControl {
            target: budget.target(),
            gain: config.budget_gain / steps as f64,
            estimate: self.estimate(budget),
            // The gates' momentum carries them on for about 1 / (1 - momentum) steps.
            horizon: 1.0 / (1.0 - config.momentum).max(0.01),
            // Climbing at a pace that would cover a tenth of the budget over the stage.
            climb: CLIMB_PER_STAGE * budget.target() / total.max(1) as f64,
            trend: self.state.gate_trend.unwrap_or_default(),
        });
        let weights = config.cost.weights(
            &net.plan,
            self.latency.as_deref().map(|l| l as &dyn CostEstimate),
        )?;
        // Weights and batch-norm affine terms frozen; only the gates learn.
        let mut net = net.freeze();
        net.gates = net.gates.into_iter().map(|g| g.unfreeze()).collect();
        if config.gate_norm == GateStageNorm::Batch {
            for unit in &mut net.convs {
                unit.bn.training = unit.bn.training.clone().with_value(true);
            }
        }
        // A resumed stage continues with the lambda_a the controller had reached.
        let lambda = match (self.state.gate_lambda, &budget) {
            (Some(lambda), _) => lambda,
            (None, Some(control)) if config.lambda_from_data => {
                let parent = control.estimate.total(&net.plan.full_counts());
                let closing = share_to_close(control.target / parent);
                let lambda = self.balanced_lambda(&net, &weights, config.delta_start, closing)?;
                observer.message(&format!(
                    "lambda_a starts at {lambda:.3e}, where the architecture loss outweighs the \
                     data on {:.0}% of the channels (about what the budget closes)",
                    100.0 * closing
                ));
                lambda
            }
            (None, _) => config.lambda,
        };
        // In budget mode delta reaches its end after half the stage's steps unless held (off
        // the budget), so that the controller has the other half to bring the gates back.
        let landing = budget.is_some().then(|| {
            self.state.gate_landing.unwrap_or_else(|| {
                LandingDelta::new(
                    config.delta_start,
                    config.delta_end,
                    total / 2,
                    LANDING_BAND,
                    LANDING_APPROACH_DELTA,
                )
            })
        });
        let trace = budget.as_ref().map(|control| {
            self.state
                .gate_trace
                .clone()
                .unwrap_or_else(|| LandingTrace::new(steps, control.target, LANDING_BAND))
        });
        let mut penalty = GatePenalty {
            lambda,
            weights,
            budget,
            delta: landing,
            trace,
        };
        let lr = move |_: usize| config.lr_gates;
        let mode = move |step: usize| GateMode::Soft {
            delta: delta.at(step),
        };
        let optim = self.sgd(false);
        let run = StageRun {
            stage: Stage::Gates,
            epochs: config.epochs_gates,
            epoch_offset: config.epochs_weights,
            lr: &lr,
            mode: &mode,
            penalty: Some(&mut penalty),
            distill: None,
        };
        let net = self.run_epochs(run, net, optim, observer)?;
        if let Some(landing) = self.state.gate_landing
            && landing.delta < landing.end
        {
            observer.message(&format!(
                "delta ended at {:.3e}, short of {:.0e}: it was held or backed off while the gates \
                 were off the budget; the pruned network is the gates' signs all the same, and more \
                 --epochs-gates give them time to settle",
                landing.delta, landing.end
            ));
        }
        // Under the budget with lambda_a near nothing: the data alone keeps less than the
        // budget allows, so the budget does not bind and the fit, not the gates, lands on it.
        // The controller's trend holds the cost of the gates' last step.
        if let Some(control) = &penalty.budget
            && let Some(cost) = control.trend.last
            && cost < (1.0 - LANDING_BAND) * control.target
            && penalty.lambda < lambda / 100.0
        {
            observer.message(&format!(
                "the gates keep {:.1}% under the budget with lambda_a down {:.0}x (to {:.1e}): \
                 on this data they keep fewer channels than the budget allows, so it does not \
                 bind; the fit reopens the channels closest to opening",
                100.0 * (1.0 - cost / control.target),
                lambda / penalty.lambda,
                penalty.lambda
            ));
        }
        Ok(net)
    }

    /// The lambda_a at which the architecture loss outweighs the cross entropy on the share
    /// `closing` of the channels at the gates' start (`s = 0`, delta `delta`): that quantile
    /// over channels of |dCE/ds| (averaged over [`BALANCE_BATCHES`] batches of the gate
    /// stage's data, in the order of its second epoch) divided by the architecture loss' push
    /// per unit of lambda_a (`c_l * delta * sigmoid'(0)`). A quantile, not a mean: a few
    /// channels carry most of the gradient. With the median whatever the budget, MobileNetV2's
    /// gates closed to 30% of the parent's MACs in the first epoch at a 40% budget, and
    /// landed 23% under it.
    fn balanced_lambda(
        &self,
        net: &GatedNet,
        weights: &[f64],
        delta: f64,
        closing: f64,
    ) -> Result<f64, SearchError> {
        let loss = CrossEntropyLossConfig::new().init(&self.device);
        let first_epoch = self.config().epochs_weights as u64 + 1;
        let mut data_push: Vec<Vec<f32>> =
            net.gates.iter().map(|g| vec![0.0; g.s.dims()[0]]).collect();
        let mut batches = 0usize;
        // With batch statistics these passes move the running statistics as the stage's
        // first steps do; the same batches every time, so a resumed search repeats them.
        for data in self.train.epoch(first_epoch).take(BALANCE_BATCHES) {
            let batch = data.to_tensors(&self.device);
            let logits = net.forward(batch.images, GateMode::Soft { delta });
            let grads = loss.forward(logits, batch.targets).backward();
            for (push, gate) in data_push.iter_mut().zip(&net.gates) {
                if let Some(g) = gate.s.grad(&grads) {
                    let g = g.into_data().try_to_vec::<f32>().unwrap_or_default();
                    for (p, v) in push.iter_mut().zip(g) {
                        *p += v;
                    }
                }
            }
            batches += 1;
        }
        let mut ratios: Vec<f64> = data_push
            .iter()
            .zip(weights)
            .flat_map(|(push, &c)| {
                push.iter()
                    .map(move |&p| (p as f64 / batches.max(1) as f64).abs() / (c * delta * 0.25))
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        let at = ((ratios.len() as f64 * closing) as usize).min(ratios.len().saturating_sub(1));
        let lambda = ratios.get(at).copied().unwrap_or(0.0);
        if !(lambda.is_finite() && lambda > 0.0) {
            return Err(SearchError::InvalidOption {
                option: "--lambda",
                value: "from the data".into(),
                reason: format!(
                    "the cross entropy gives the gates no gradient ({lambda}): set lambda_a's start with --lambda"
                ),
            });
        }
        Ok(lambda)
    }

    /// What is wrong when the gate stage pruned the network to (next to) nothing: its
    /// binarised network classifies at chance although the parent learned (without a budget,
    /// whose fit would reopen channels), or half or more of the gated layers kept a single
    /// channel (a supernet's candidates removed whole are not counted: removing them is the
    /// search's choice). `None` for a network worth finetuning.
    pub(super) fn collapse(&self, masks: &ChannelMasks) -> Option<String> {
        let groups = &self.parent.plan.groups;
        // A supernet's candidate that lost every channel was removed, which is how the search
        // chooses among candidates, not a collapse: count only the layers that remain.
        let kept: Vec<usize> = groups
            .group_of_gate
            .iter()
            .map(|&g| (g, masks.kept(g).len()))
            .filter(|&(g, k)| k > 0 || !groups.removable(g))
            .map(|(_, k)| k)
            .collect();
        let removed = groups.group_of_gate.len() - kept.len();
        let at_floor = kept.iter().filter(|&&k| k <= 1).count();
        let classes = self.dataset.train.num_classes().max(1);
        let chance = 1.0 / classes as f64;
        let parent = self.state.parent.as_ref().map_or(0.0, |p| p.top1);
        let lambda = self.state.gate_lambda.unwrap_or(self.config().lambda);
        // Under a budget the fit chose the channels: the budget is what to loosen.
        let fix = match self.budget() {
            Some(budget) => format!(
                "the budget ({budget}) is too tight for this model: give a larger {}",
                budget.option()
            ),
            None => "lower --lambda (say tenfold), or prune to a cost with --flops-budget or \
                     --latency-budget-ms, which stops the gates at the budget"
                .into(),
        };
        let binarised = self
            .state
            .history
            .iter()
            .rev()
            .find(|e| e.stage == Stage::Gates.name())
            .map(|e| e.test_top1);
        if let Some(top1) = binarised
            && self.config().budget.is_none()
            && parent >= chance + 0.3
            && top1 <= chance + 0.1
        {
            return Some(format!(
                "the gate stage collapsed the network: binarised, it classifies at chance ({:.1}% \
                 over {classes} classes; the parent had {:.1}%) at lambda_a {lambda:.2e}; {fix}",
                100.0 * top1,
                100.0 * parent
            ));
        }
        if kept.len() >= 2 && 2 * at_floor >= kept.len() {
            let layers = match removed {
                0 => format!("{} gated layers", kept.len()),
                _ => format!(
                    "{} gated layers left (besides {removed} candidates removed whole)",
                    kept.len()
                ),
            };
            return Some(format!(
                "the gate stage collapsed the network: {at_floor} of {layers} keep a single \
                 channel at lambda_a {lambda:.2e}; {fix}"
            ));
        }
        None
    }

    /// What is wrong when a channel group that every image passes through (a plain layer, a
    /// mobile network's or a supernet's coupled stream: [`ChannelGroups::bottlenecks`]) kept
    /// a single channel: the network after it sees one feature map, whatever survives around
    /// it. A network can still learn through that, so it is said, not refused.
    ///
    /// [`ChannelGroups::bottlenecks`]: dnal_models::ChannelGroups::bottlenecks
    pub(super) fn squeezed(&self, masks: &ChannelMasks) -> Option<String> {
        let plan = &self.parent.plan;
        let bottlenecks = plan.groups.bottlenecks(&plan.spec);
        let squeezed: Vec<usize> = bottlenecks
            .iter()
            .copied()
            .filter(|&g| masks.kept(g).len() <= 1 && plan.groups.groups[g].channels > 1)
            .collect();
        if squeezed.is_empty() {
            return None;
        }
        let coupled = squeezed
            .iter()
            .any(|&g| plan.groups.groups[g].producers.len() > 1);
        let config = self.config();
        let fix = match self.budget() {
            Some(budget) => {
                let mut fix = format!("give a larger {}", budget.option());
                // A coupled stream's channel is charged for every layer that writes or
                // reads it, which makes it the dearest channel when those are many.
                if coupled && matches!(config.cost, CostWeighting::Params | CostWeighting::Flops) {
                    fix.push_str(&format!(
                        ", or weigh channels with --cost uniform (--cost {} charges a stream's \
                         channel for every layer it joins)",
                        config.cost
                    ));
                }
                fix
            }
            None => "lower --lambda".into(),
        };
        Some(format!(
            "{} of the {} channel groups every image passes through kept a single channel, so \
             the layers after each see one feature map: {}; {fix}",
            squeezed.len(),
            bottlenecks.len(),
            squeezed
                .iter()
                .map(|&g| format!(
                    "{} at 1 of {}",
                    plan.groups.describe(&plan.spec, g),
                    plan.groups.groups[g].channels
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// Finetuning the pruned network (cosine learning rate), with the trained parent as
    /// teacher when distillation is on.
    pub(super) fn finetune_stage(
        &mut self,
        net: GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<GatedNet, SearchError> {
        let config = self.config().clone();
        let steps = self.train.num_batches();
        let schedule = CosineSchedule {
            base: config.lr_finetune,
            steps: config.epochs_finetune * steps,
            warmup: 0,
        };
        let lr = move |step: usize| schedule.at(step);
        let mode = |_: usize| GateMode::Off;
        let optim = self.sgd(true);
        let distill = if config.distill > 0.0 {
            let tag = format!("{}-final", Stage::Weights.name());
            let teacher = self.load_checkpoint(&tag, self.parent.clone())?;
            observer.message(&format!(
                "distilling from the trained parent: loss = {:.2} * CE + {:.2} * T^2 * KL at T = {}",
                1.0 - config.distill,
                config.distill,
                config.distill_temperature
            ));
            Some(Distillation::new(
                &teacher,
                &self.device,
                config.distill,
                config.distill_temperature,
            ))
        } else {
            None
        };
        let run = StageRun {
            stage: Stage::Finetune,
            epochs: config.epochs_finetune,
            epoch_offset: config.epochs_weights + config.epochs_gates,
            lr: &lr,
            mode: &mode,
            penalty: None,
            distill: distill.as_ref(),
        };
        self.run_epochs(run, net.unfreeze().train(), optim, observer)
    }
}

#[cfg(test)]
mod tests {
    use super::share_to_close;

    #[test]
    fn the_share_to_close_follows_the_square_root_of_the_cost() {
        assert!((share_to_close(0.25) - 0.5).abs() < 1e-12);
        assert!((share_to_close(0.64) - 0.2).abs() < 1e-12);
        // Kept within 5-95%.
        assert_eq!(share_to_close(1.0), 0.05);
        assert_eq!(share_to_close(0.0), 0.95);
        assert_eq!(share_to_close(7.0), 0.05);
    }
}
