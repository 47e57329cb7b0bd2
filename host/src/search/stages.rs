//! The three training stages of DNAL: the weights (gates off), the gates (weights frozen,
//! delta growing), and the finetuning of the pruned network; and the check for a collapsed
//! network.

use burn::module::Module;
use dnal_models::{ChannelMasks, GateMode, GatedNet};

use super::epochs::StageRun;
use super::run::Search;
use super::state::Stage;
use crate::budget::{BudgetControl, CostEstimate};
use crate::distill::Distillation;
use crate::error::SearchError;
use crate::progress::SearchObserver;
use crate::schedule::{CosineSchedule, DeltaSchedule};
use crate::train::GatePenalty;

impl Search {
    /// The weight stage: the parent trained with its gates off (cosine learning rate, weight
    /// decay).
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
        let lr = move |step: usize| schedule.at(step);
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
    /// in budget mode lambda_a is steered to the budget.
    pub(super) fn gate_stage(
        &mut self,
        net: GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<GatedNet, SearchError> {
        let config = self.config().clone();
        let steps = self.train.num_batches();
        // In budget mode delta is held at its start for the first 40% of the stage: the gates'
        // decisions stay reversible while the controller settles lambda_a.
        let total = config.epochs_gates * steps;
        let delta = DeltaSchedule {
            start: config.delta_start,
            end: config.delta_end,
            steps: total,
            hold: if config.budget.is_some() {
                total * 2 / 5
            } else {
                0
            },
        };
        let budget = self.budget().map(|budget| BudgetControl {
            target: budget.target(),
            gain: config.budget_gain / steps as f64,
            estimate: self.estimate(budget),
        });
        // A resumed stage continues with the lambda_a the controller had reached.
        let mut penalty = GatePenalty {
            lambda: self.state.gate_lambda.unwrap_or(config.lambda),
            weights: config.cost.weights(
                &net.plan,
                self.latency.as_deref().map(|l| l as &dyn CostEstimate),
            )?,
            budget,
        };
        // Weights and BN statistics frozen; only the gates learn.
        let mut net = net.freeze();
        net.gates = net.gates.into_iter().map(|g| g.unfreeze()).collect();
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
        self.run_epochs(run, net, optim, observer)
    }

    /// What is wrong when the gate stage pruned the network to (next to) nothing: its
    /// binarised network classifies at chance although the parent learned (without a budget,
    /// whose fit would reopen channels), or half or more of the gated layers kept a single
    /// channel. `None` for a network worth finetuning.
    pub(super) fn collapse(&self, masks: &ChannelMasks) -> Option<String> {
        let groups = &self.parent.plan.groups;
        let kept: Vec<usize> = groups
            .group_of_gate
            .iter()
            .map(|&g| masks.kept(g).len())
            .collect();
        let at_floor = kept.iter().filter(|&&k| k <= 1).count();
        let classes = self.dataset.train.num_classes().max(1);
        let chance = 1.0 / classes as f64;
        let parent = self.state.parent.as_ref().map_or(0.0, |p| p.top1);
        let lambda = self.state.gate_lambda.unwrap_or(self.config().lambda);
        let fix = "lower --lambda (say tenfold), or prune to a cost with --flops-budget or \
                   --latency-budget-ms, which stops the gates at the budget";
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
            return Some(format!(
                "the gate stage collapsed the network: {at_floor} of {} gated layers keep a single \
                 channel at lambda_a {lambda:.2e}; {fix}",
                kept.len()
            ));
        }
        None
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
