//! The epochs of one stage: train, evaluate, record and checkpoint, epoch after epoch.

use std::time::Instant;

use burn::optim::ModuleOptimizer;
use dnal_models::{ChannelMasks, GateMode, GatedNet};

use super::run::Search;
use super::state::Stage;
use crate::arch_cost::expected_flops;
use crate::budget::{CostEstimate, expected_counts};
use crate::checkpoint::write_json;
use crate::distill::Distillation;
use crate::error::SearchError;
use crate::progress::SearchObserver;
use crate::report::{EpochRecord, GateRecord};
use crate::train::{GatePenalty, StepPlan, evaluate_net, train_epoch};

/// How one stage trains: what [`Search::run_epochs`] runs.
pub(super) struct StageRun<'a> {
    /// The stage.
    pub stage: Stage,
    /// Its epochs, in all (a resumed stage runs the ones not done).
    pub epochs: usize,
    /// Epochs of the stages before it: the data order of an epoch depends on its number in
    /// the whole search.
    pub epoch_offset: usize,
    /// The learning rate at a step of the stage.
    pub lr: &'a dyn Fn(usize) -> f64,
    /// The gates' mode at a step of the stage.
    pub mode: &'a dyn Fn(usize) -> GateMode,
    /// The architecture loss (gate stage only).
    pub penalty: Option<&'a mut GatePenalty>,
    /// The parent as teacher (finetuning with distillation only).
    pub distill: Option<&'a Distillation>,
}

impl Search {
    /// Runs the remaining epochs of a stage, evaluating and checkpointing after each.
    pub(super) fn run_epochs(
        &mut self,
        run: StageRun<'_>,
        mut net: GatedNet,
        mut optim: ModuleOptimizer,
        observer: &mut dyn SearchObserver,
    ) -> Result<GatedNet, SearchError> {
        let StageRun {
            stage,
            epochs,
            epoch_offset,
            lr,
            mode,
            mut penalty,
            distill,
        } = run;
        let steps = self.train.num_batches();
        let first = self.state.epochs_done;
        if first > 0
            && let Some(tag) = &self.state.checkpoint
        {
            optim = self.checkpoints.load_optimizer(tag, optim)?;
        }
        observer.stage(stage.name(), epochs, first, steps);
        self.state.stage_report(stage.name()).epochs = first;
        for epoch in first..epochs {
            let started = Instant::now();
            let plan = StepPlan {
                lr,
                mode,
                first_step: epoch * steps,
                data_epoch: (epoch_offset + epoch) as u64,
                distill,
            };
            let gates_note = |net: &GatedNet| -> String {
                if stage == Stage::Gates {
                    let alive: usize = net.alive_per_gate().iter().sum();
                    let total: usize = net.channels_per_gate().iter().sum();
                    format!("live {alive}/{total}")
                } else {
                    String::new()
                }
            };
            let note = gates_note(&net);
            let (trained, stats) = train_epoch(
                net,
                &mut optim,
                &self.train,
                &self.train_device,
                &plan,
                penalty
                    .as_deref_mut()
                    .map(|p| p as &mut dyn crate::train::StepPenalty<GatedNet>),
                |step, stats| observer.step(epoch + 1, step, stats, &note),
            )
            .map_err(|bad| SearchError::NonFiniteLoss {
                stage: stage.name().into(),
                epoch: epoch + 1,
                step: bad.step,
                value: bad.value,
                checkpoint: self
                    .state
                    .checkpoint
                    .as_ref()
                    .map(|t| self.checkpoints.path().join(t))
                    .unwrap_or_else(|| self.checkpoints.path().to_path_buf()),
                out: self.out.clone(),
            })?;
            net = trained;
            let last_step = (epoch + 1) * steps - 1;
            let (accuracy, note) = if stage == Stage::Gates {
                let lambda = penalty.as_ref().map_or(0.0, |p| p.lambda);
                self.state.gate_lambda = Some(lambda);
                let landing = penalty.as_ref().and_then(|p| p.delta);
                self.state.gate_landing = landing;
                self.state.gate_trend = penalty
                    .as_ref()
                    .and_then(|p| p.budget.as_ref())
                    .map(|b| b.trend);
                self.state.gate_trace = penalty.as_ref().and_then(|p| p.trace.clone());
                let gate_mode =
                    landing.map_or(mode(last_step), |l| GateMode::Soft { delta: l.delta });
                let record = self.gate_record(&net, epoch + 1, gate_mode, lambda);
                let accuracy = evaluate_net(&net, GateMode::Hard, &self.test, &self.device)
                    .map_err(|bad| {
                        self.non_finite(
                            format!("the gate stage's network after epoch {}", epoch + 1),
                            bad,
                        )
                    })?;
                let per_layer: Vec<String> = net
                    .gate_names()
                    .iter()
                    .zip(record.alive.iter().zip(net.channels_per_gate()))
                    .map(|(name, (alive, total))| format!("{name} {alive}/{total}"))
                    .collect();
                let latency = match (record.expected_ms, record.hard_ms) {
                    (Some(e), Some(h)) => format!(", E[ms] {e:.2}, binarised {h:.2} ms"),
                    _ => String::new(),
                };
                let note = format!(
                    "delta {:.3e}, lambda {:.3e}, E[MACs] {:.3e}, binarised {} MACs, {} params{latency}, live {}/{} ({})",
                    record.delta,
                    record.lambda,
                    record.expected_flops,
                    record.hard_flops,
                    record.hard_params,
                    record.alive.iter().sum::<usize>(),
                    net.channels_per_gate().iter().sum::<usize>(),
                    per_layer.join(", ")
                );
                self.state.gates.push(record);
                (accuracy, note)
            } else {
                let accuracy = evaluate_net(&net, GateMode::Off, &self.test, &self.device)
                    .map_err(|bad| {
                        self.non_finite(
                            format!(
                                "the {} stage's network after epoch {}",
                                stage.name(),
                                epoch + 1
                            ),
                            bad,
                        )
                    })?;
                (accuracy, String::new())
            };
            let record =
                EpochRecord::new(stage.name(), epoch + 1, &stats, &accuracy, lr(last_step));
            observer.epoch(&record, &note);
            self.state.history.push(record);
            self.state.epochs_done = epoch + 1;
            let tag = format!("{}-{:03}", stage.name(), epoch + 1);
            self.save_checkpoint(&tag, &net, Some(&optim))?;
            self.state.checkpoint = Some(tag.clone());
            let report = self.state.stage_report(stage.name());
            report.epochs = epoch + 1;
            report.seconds += started.elapsed().as_secs_f64();
            write_json(&self.checkpoints.state_path(), &self.state)?;
            self.checkpoints.prune_old(&tag);
        }
        Ok(net)
    }

    /// What the gates look like after a gate epoch: live channels, expected and binarised
    /// costs, delta and lambda_a.
    fn gate_record(&self, net: &GatedNet, epoch: usize, mode: GateMode, lambda: f64) -> GateRecord {
        let delta = match mode {
            GateMode::Soft { delta } => delta,
            _ => self.config().delta_end,
        };
        let scores: Vec<Vec<f32>> = net.gates.iter().map(|g| g.scores()).collect();
        let masks = ChannelMasks::from_gates(net);
        let latency = self.latency.as_ref();
        GateRecord {
            epoch,
            delta,
            alive: net.alive_per_gate(),
            expected_flops: expected_flops(&net.plan, &scores, delta),
            hard_flops: net.plan.flops.total(&masks.counts()).round() as u64,
            hard_params: net.plan.params.total(&masks.counts()).round() as u64,
            lambda,
            expected_ms: latency.map(|l| l.total(&expected_counts(net, delta))),
            hard_ms: latency.map(|l| l.total(&masks.counts())),
        }
    }
}
