//! The end of a search: the parent's and the pruned network's exports, the export's own
//! evaluation, the board's measurement, and the report.

use std::time::Instant;

use burn::module::Module;
use dnal_export::int8::Int8Export;
use dnal_export::{Export, Precision};
use dnal_models::{ChannelMasks, GatedNet, NetPlan};

use super::run::{Search, net_report};
use super::state::Stage;
use super::{INT8_EXPORT, PARENT_EXPORT};
use crate::budget::Budget;
use crate::checkpoint::write_json;
use crate::data::{ExportTestSet, normalised_images};
use crate::error::SearchError;
use crate::export::{ExportNet, SearchInfo, build_export};
use crate::latency::{MEASURE_IMAGES, measure_on_board};
use crate::plot::{LandingFigure, SearchCurves, SupernetFigure, write_figure};
use crate::progress::SearchObserver;
use crate::quantize::aware::{self, AwareTraining, Training};
use crate::quantize::{
    BOARD_CALIBRATION_IMAGES, QuantizeData, QuantizePhase, QuantizeProgress, QuantizeReport,
    quantize_for_board, quantize_network, write_report,
};
use crate::report::{EpochRecord, GroupChannels, LatencyReport, Report, SupernetLayer};
use crate::train::{EpochStats, Predictions, predict};

impl Search {
    /// Exports the trained, unpruned network to `OUT/parent` (once), so that it can be
    /// deployed and measured next to the pruned one.
    pub(super) fn export_parent(
        &self,
        net: &GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<(), SearchError> {
        let dir = self.out.join(PARENT_EXPORT);
        if dir.join(dnal_export::ARCH_FILE).exists() {
            return Ok(());
        }
        let export = build_export(
            &net.valid(),
            &self.parent.plan,
            &ChannelMasks::full(&self.parent.plan),
            &self.dataset,
            &self.search_info(),
        )?;
        export.write(&dir)?;
        observer.message(&format!("parent exported to {}", dir.display()));
        Ok(())
    }

    /// What `arch.json` records of the search.
    pub(super) fn search_info(&self) -> SearchInfo {
        SearchInfo {
            config: self.config().clone(),
            parent_flops: self.parent.flops(),
            parent_params: self.parent.params(),
        }
    }

    /// Writes the pruned network's export to `OUT` and evaluates it as written: the reported
    /// accuracy is the accuracy of the files on disk, as `dnal eval` reads them. Returns the
    /// export as loaded back.
    fn export_pruned(
        &self,
        net: &GatedNet,
        masks: &ChannelMasks,
    ) -> Result<(Export, Predictions), SearchError> {
        let export = build_export(
            &net.valid(),
            &self.parent.plan,
            masks,
            &self.dataset,
            &self.search_info(),
        )?;
        export.write(&self.out)?;
        let written = Export::load(&self.out)?;
        let eval_device = self.device.clone().without_autodiff();
        let export_net = ExportNet::new(&written, &eval_device);
        let predictions = predict(&self.test, written.arch().num_classes, &eval_device, |x| {
            export_net.forward(x)
        })
        .map_err(|bad| self.non_finite("the exported network".into(), bad))?;
        Ok((written, predictions))
    }

    /// Measures `export` (`what` it is, for the progress line) on the board of the search's
    /// latency table, when the search has one: as it is, or quantised first when the search
    /// delivers int8 (then `int8` is its int8 export, if there is one already). The firmware
    /// goes to `OUT/firmware-BOARD`, so every measurement of a search reuses one build folder.
    pub(super) fn measure(
        &mut self,
        export: &Export,
        int8: Option<&Int8Export>,
        what: &str,
        observer: &mut dyn SearchObserver,
    ) -> Result<Option<LatencyReport>, SearchError> {
        let Some(estimate) = self.latency.clone() else {
            return Ok(None);
        };
        let started = Instant::now();
        let table = estimate.table();
        observer.message(&format!("measuring {what} on {}", table.board));
        let images = normalised_images(
            &self.dataset.test,
            &self.dataset.normalization,
            MEASURE_IMAGES,
        );
        let dirs = (self.out.as_path(), self.out.as_path());
        let measured = match (self.config().precision, int8) {
            (Precision::F32, _) => measure_on_board(export.into(), dirs, table, &images, what)?,
            (Precision::Int8, Some(int8)) => {
                let dir = self.out.join(INT8_EXPORT);
                measure_on_board(int8.into(), (&dir, &self.out), table, &images, what)?
            }
            (Precision::Int8, None) => {
                let int8 = quantize_for_board(
                    export,
                    self.dataset
                        .train
                        .clone()
                        .truncate(BOARD_CALIBRATION_IMAGES),
                    &self.dataset.normalization,
                    &self.device,
                )?;
                measure_on_board((&int8).into(), dirs, table, &images, what)?
            }
        };
        self.state.stage_report("measure").seconds += started.elapsed().as_secs_f64();
        observer.message(&format!("{what}: {}", measured.describe()));
        Ok(Some(measured))
    }

    /// With `--precision int8`: quantises the pruned network's export (calibration, then
    /// quantisation-aware training unless `--epochs-qat 0`) into `OUT/int8`, with a
    /// `report.json` of its own that `dnal eval` reproduces.
    fn quantize_pruned(
        &mut self,
        export: &Export,
        f32: &Predictions,
        observer: &mut dyn SearchObserver,
    ) -> Result<(Int8Export, QuantizeReport), SearchError> {
        let started = Instant::now();
        let config = self.config().clone();
        let test = ExportTestSet {
            dataset: self.dataset.name.clone(),
            test: self.dataset.test.clone(),
            normalization: self.dataset.normalization.clone(),
        };
        let settings = (config.epochs_qat > 0).then_some(AwareTraining {
            epochs: config.epochs_qat,
            lr: config.lr_qat,
            momentum: config.momentum,
            weight_decay: config.weight_decay,
            distill: config.distill_qat,
            distill_temperature: config.distill_temperature_qat,
        });
        let data = QuantizeData {
            test: &test,
            calibration: self
                .dataset
                .train
                .clone()
                .truncate(config.calibration_images),
            training: settings.as_ref().map(|settings| Training {
                settings,
                batches: &self.train,
                first_data_epoch: (config.epochs_weights
                    + config.epochs_gates
                    + config.epochs_finetune) as u64,
            }),
        };
        observer.message(&format!(
            "quantising to int8: calibrating on {} training images{}",
            config.calibration_images,
            match &settings {
                Some(s) => format!(", then {}", s.describe()),
                None => String::new(),
            }
        ));
        let mut progress = QuantizeStage {
            observer: &mut *observer,
            epochs: config.epochs_qat,
            started: false,
        };
        let (int8, report) =
            quantize_network(export, &self.out, f32, data, &self.device, &mut progress)?;
        let dir = self.out.join(INT8_EXPORT);
        int8.write(&dir)?;
        write_report(&dir, &report)?;
        let stage = self.state.stage_report(aware::STAGE);
        stage.seconds += started.elapsed().as_secs_f64();
        stage.epochs = report.history.len();
        if let Some(agreement) = &report.f32_agreement {
            observer.message(&agreement.describe());
        }
        observer.message(&format!(
            "int8 export in {}: top-1 {:.2}% (f32 {:.2}%{}), weights {} bytes ({:.2}x f32)",
            dir.display(),
            100.0 * report.int8.top1,
            100.0 * report.f32.top1,
            match &report.post_training {
                Some(ptq) => format!(
                    ", post-training quantisation alone {:.2}%",
                    100.0 * ptq.top1
                ),
                None => String::new(),
            },
            report.int8_weight_bytes,
            report.int8_weight_bytes as f64 / report.f32_weight_bytes.max(1) as f64
        ));
        Ok((int8, report))
    }

    /// What is wrong when the network as delivered measured over a latency budget. The fit
    /// measured it under, on the gate stage's weights; finetuning changes only the weights,
    /// and the int8 firmware's instructions do not depend on them (its zero points are
    /// opaque to the compiler), so this says that something else moved the cost.
    fn over_budget(&self, latency: Option<&LatencyReport>) -> Option<String> {
        let (Some(Budget::LatencyMs(budget)), Some(latency)) = (self.budget(), latency) else {
            return None;
        };
        let kept = self.state.budget.as_ref().and_then(|b| {
            b.measured_fits
                .iter()
                .map(|f| f.measured_ms)
                .filter(|&ms| ms <= budget)
                .reduce(f64::max)
        });
        (latency.measured_ms > budget).then(|| {
            format!(
                "the network measured {:.3} ms on {}, over the {budget} ms budget{}; search \
                 again with a budget lower by the difference",
                latency.measured_ms,
                latency.board,
                kept.map_or(String::new(), |ms| format!(
                    " (its fit measured {ms:.3} ms)"
                ))
            )
        })
    }

    /// Exports the pruned network, evaluates the export as written, measures it on the board
    /// and writes the report.
    pub(super) fn finish(
        &mut self,
        net: &GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<Report, SearchError> {
        let started = Instant::now();
        let masks = self
            .state
            .masks
            .clone()
            .expect("the finetune stage runs on a pruned network");
        let (export, predictions) = self.export_pruned(net, &masks)?;
        let parent = self.state.parent.clone().unwrap_or_default();
        let pruned = net_report(net, predictions.accuracy);
        self.state.stage_report("export").seconds += started.elapsed().as_secs_f64();
        let int8 = match self.config().precision {
            Precision::Int8 => Some(self.quantize_pruned(&export, &predictions, observer)?),
            Precision::F32 => None,
        };
        let latency = match &int8 {
            Some((int8, _)) => self.measure(&export, Some(int8), "the int8 network", observer)?,
            None => self.measure(&export, None, "the pruned network", observer)?,
        };
        if let Some(warning) = self.over_budget(latency.as_ref()) {
            observer.message(&format!("warning: {warning}"));
            self.state.warnings.push(warning);
        }
        if let Some(note) = latency.as_ref().and_then(|l| l.note.clone())
            && !self.state.warnings.contains(&note)
        {
            observer.message(&format!("warning: {note}"));
            self.state.warnings.push(note);
        }
        let int8 = int8.map(|(_, report)| report);
        let channels = channel_groups(&self.parent.plan, &masks);
        let report = Report {
            dnal_version: env!("CARGO_PKG_VERSION").into(),
            config: self.config().clone(),
            flops_reduction: parent.flops as f64 / pruned.flops.max(1) as f64,
            params_reduction: parent.params as f64 / pruned.params.max(1) as f64,
            top1_change_pp: 100.0 * (pruned.top1 - parent.top1),
            parent,
            pruned,
            stages: self.state.stages.clone(),
            channels,
            gate_names: self.parent.gate_names(),
            gates: self.state.gates.clone(),
            history: self.state.history.clone(),
            budget: self.state.budget.clone(),
            latency,
            augmentation: Some(self.dataset.augmentation.to_string()),
            supernet: SupernetLayer::all(&self.parent.plan, &masks),
            warnings: self.state.warnings.clone(),
            int8,
        };
        write_json(&self.out.join("report.json"), &report)?;
        // The plots are a convenience: a missing font is worth a warning, not the search.
        if let Err(e) = write_figure(
            &self.out.join("curves"),
            (1200, 480),
            &SearchCurves { report: &report },
        ) {
            observer.message(&format!("warning: no curves plot: {e}"));
        }
        if let Some(budget) = &report.budget
            && let Some(trace) = &budget.trace
            && let Err(e) = write_figure(
                &self.out.join("landing"),
                (1000, 640),
                &LandingFigure {
                    trace,
                    budget: budget.budget.to_string(),
                },
            )
        {
            observer.message(&format!("warning: no landing plot: {e}"));
        }
        if !report.supernet.is_empty()
            && let Err(e) = write_figure(
                &self.out.join("supernet"),
                SupernetFigure::size(&report.supernet),
                &SupernetFigure {
                    layers: &report.supernet,
                },
            )
        {
            observer.message(&format!("warning: no supernet plot: {e}"));
        }
        self.state.stage = Stage::Done;
        write_json(&self.checkpoints.state_path(), &self.state)?;
        Ok(report)
    }
}

/// A search's observer as quantisation's progress: the quantisation-aware epochs as a stage.
struct QuantizeStage<'a> {
    observer: &'a mut dyn SearchObserver,
    epochs: usize,
    started: bool,
}

impl QuantizeProgress for QuantizeStage<'_> {
    fn progress(&mut self, _: QuantizePhase, _: usize, _: usize) {}

    fn step(&mut self, epoch: usize, step: usize, steps: usize, stats: &EpochStats) {
        if !self.started {
            self.started = true;
            self.observer.stage(aware::STAGE, self.epochs, 0, steps);
        }
        self.observer.step(epoch, step, stats, "fake-quantised");
    }

    fn epoch(&mut self, record: &EpochRecord) {
        self.observer
            .epoch(record, "test top-1 of the fake-quantised network");
    }
}

fn channel_groups(plan: &NetPlan, masks: &ChannelMasks) -> Vec<GroupChannels> {
    plan.groups
        .group_of_gate
        .iter()
        .map(|&g| GroupChannels {
            layers: plan.groups.describe(&plan.spec, g),
            parent: plan.groups.groups[g].channels,
            pruned: masks.kept(g).len(),
        })
        .collect()
}
