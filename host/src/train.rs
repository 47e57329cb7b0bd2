//! One epoch of training and one pass of evaluation, shared by the three stages.

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor};
use dnal_datasets::Batcher;
use dnal_firmware::deploy::top1_class;
use dnal_models::{GateMode, GatedNet};
use serde::{Deserialize, Serialize};

use crate::budget::{BudgetControl, LandingTrace, hard_counts};
use crate::distill::Distillation;
use crate::schedule::LandingDelta;

/// Test batches are large: evaluation keeps no autodiff graph.
pub const EVAL_BATCH: usize = 256;

/// The DNAL architecture loss: `lambda_a * sum_g c_g * sum_j sigmoid(delta * s_gj)`.
#[derive(Clone, Debug)]
pub struct GatePenalty {
    /// lambda_a.
    pub lambda: f64,
    /// c_g for every gate.
    pub weights: Vec<f64>,
    /// In budget mode, what moves lambda_a after every step.
    pub budget: Option<BudgetControl>,
    /// In budget mode, delta, held while the gates are off the budget.
    pub delta: Option<LandingDelta>,
    /// In budget mode, the stage's course: cost, lambda_a and delta step by step.
    pub trace: Option<LandingTrace>,
}

/// A network [`train_epoch`] can train: a burn module with logits for a batch.
pub trait Classifier: Module {
    /// Logits for a batch of normalised images, with the gates (if it has any) in `mode`.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, height, width]`
    /// - output: `[batch, num_classes]`
    fn logits(&self, x: Tensor<4>, mode: GateMode) -> Tensor<2>;
}

impl Classifier for GatedNet {
    fn logits(&self, x: Tensor<4>, mode: GateMode) -> Tensor<2> {
        self.forward(x, mode)
    }
}

/// What one epoch of training measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Mean loss over the epoch's steps (cross entropy, or its blend with the distillation
    /// term, plus the gate penalty, if any).
    pub loss: f64,
    /// Mean cross entropy.
    pub cross_entropy: f64,
    /// Top-1 accuracy on the (augmented) training batches.
    pub train_top1: f64,
    /// Images seen.
    pub images: usize,
    /// Wall time.
    pub seconds: f64,
}

/// A loss that stopped being a number, at this step of the epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonFinite {
    /// Step within the epoch (1-based).
    pub step: usize,
    /// The value.
    pub value: f32,
}

/// How a stage steps: the learning rate and the gate mode at each global step.
pub struct StepPlan<'a> {
    /// The learning rate at a stage step.
    pub lr: &'a dyn Fn(usize) -> f64,
    /// The gate mode at a stage step.
    pub mode: &'a dyn Fn(usize) -> GateMode,
    /// The stage step at which this epoch starts.
    pub first_step: usize,
    /// The epoch number that seeds the data order (and augmentation) of this epoch.
    pub data_epoch: u64,
    /// A teacher whose soft targets join the loss (finetuning with `--distill`).
    pub distill: Option<&'a Distillation>,
}

/// A term added to the loss of every step, and what it learns from each step.
pub trait StepPenalty<N> {
    /// The term for `net` at this delta (`None`: nothing to add).
    fn loss(&self, net: &N, delta: f64) -> Option<Tensor<1>>;
    /// After the optimizer stepped `net`.
    fn after_step(&mut self, net: &N);
    /// The network after the optimizer's step, with what the penalty requires of its
    /// parameters enforced (budget mode's gate stage keeps the gates reversible while it
    /// steers); by default unchanged.
    fn constrain(&self, net: N) -> N {
        net
    }
    /// The delta the next step runs at, where the penalty steers it (budget mode's gate
    /// stage); `None` follows the stage's plan.
    fn delta(&self) -> Option<f64> {
        None
    }
}

impl StepPenalty<GatedNet> for GatePenalty {
    /// The penalty term for the gates at this delta.
    fn loss(&self, net: &GatedNet, delta: f64) -> Option<Tensor<1>> {
        let mut total: Option<Tensor<1>> = None;
        for (gate, &c) in net.gates.iter().zip(&self.weights) {
            let p = gate.values(GateMode::Soft { delta })?;
            let term = p.sum().mul_scalar(c * self.lambda);
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
        total
    }

    /// In budget mode, moves lambda_a by the cost of the network the gates now describe.
    fn after_step(&mut self, net: &GatedNet) {
        if let Some(budget) = &mut self.budget {
            let cost = budget.estimate.total(&hard_counts(net));
            if let Some(trace) = &mut self.trace {
                let delta = self.delta.map_or(f64::NAN, |d| d.delta);
                trace.record(cost, self.lambda, delta);
            }
            let response = self.delta.map_or(1.0, |d| d.response());
            self.lambda = budget.update(self.lambda, cost, response);
            if let Some(delta) = &mut self.delta {
                delta.after_step(cost / budget.target);
            }
        }
    }

    /// Scales every gate's `s` into [`LandingDelta::reversible_bound`] while the gates are off
    /// the budget: a layer whose largest `|s|` is past the bound is multiplied by `bound /
    /// max |s|`, so its gates keep their order and their spacing. Clamped instead, they piled
    /// up at the bound (at the end of a 141-step vgg-small stage on a 20 ms M7 budget, 111 of
    /// the 132 kept gates sat at exactly `s = 0.04`), and a move of lambda_a then flipped many
    /// of them within a few steps: the cost swung 0.9x -> 1.5x -> 0.6x the budget in 25 steps
    /// and the stage ended 24% over it.
    fn constrain(&self, mut net: GatedNet) -> GatedNet {
        let Some(bound) = self.delta.and_then(|d| d.reversible_bound()) else {
            return net;
        };
        let bound = bound as f32;
        net.gates = net
            .gates
            .into_iter()
            .map(|mut gate| {
                // `map` keeps the parameter's id, so the optimizer keeps its momentum; the
                // scaling is of the inner tensor, so that the result is a leaf again. The
                // scale stays on the device (no read-back per gate and step), and is exactly
                // 1 in a layer already within the bound.
                gate.s = gate.s.map(|s| {
                    let s = s.inner();
                    let largest = s.clone().abs().max();
                    let within = largest.clone().lower_equal_elem(bound);
                    let scale = largest
                        .ones_like()
                        .mul_scalar(bound)
                        .div(largest)
                        .mask_fill(within, 1.0);
                    Tensor::from_inner(s.mul(scale)).require_grad()
                });
                gate
            })
            .collect();
        net
    }

    fn delta(&self) -> Option<f64> {
        self.delta.map(|d| d.delta)
    }
}

/// SGD with momentum (no dampening) and, when positive, L2 weight decay: what every stage
/// trains with.
pub fn sgd(momentum: f64, weight_decay: f64) -> ModuleOptimizer {
    let mut sgd = SgdConfig::new().with_momentum(Some(
        MomentumConfig::new()
            .with_momentum(momentum)
            .with_dampening(0.0),
    ));
    if weight_decay > 0.0 {
        sgd = sgd.with_weight_decay(Some(WeightDecayConfig::new(weight_decay as f32)));
    }
    sgd.init()
}

/// Trains `net` for one epoch. Returns the trained net, or the step whose loss was not finite
/// (the net is then dropped: the caller falls back to its last checkpoint).
pub fn train_epoch<N: Classifier>(
    mut net: N,
    optim: &mut ModuleOptimizer,
    batcher: &Batcher,
    device: &Device,
    plan: &StepPlan<'_>,
    mut penalty: Option<&mut dyn StepPenalty<N>>,
    mut on_step: impl FnMut(usize, &EpochStats),
) -> Result<(N, EpochStats), NonFinite> {
    let started = Instant::now();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut stats = EpochStats::default();
    let (mut loss_sum, mut ce_sum, mut correct, mut steps) = (0.0f64, 0.0f64, 0usize, 0usize);
    for (i, data) in batcher.epoch(plan.data_epoch).enumerate() {
        let step = plan.first_step + i;
        let mode = match penalty.as_ref().and_then(|p| p.delta()) {
            Some(delta) => GateMode::Soft { delta },
            None => (plan.mode)(step),
        };
        let batch = data.to_tensors(device);
        let logits = net.logits(batch.images, mode);
        let hits = count_correct(logits.clone().detach(), batch.targets.clone());
        let ce = loss_fn.forward(logits.clone(), batch.targets);
        let ce_value = ce.clone().into_scalar::<f32>();
        // What the network is trained on besides the gate penalty.
        let data_loss = match plan.distill {
            Some(distill) => distill.loss(logits, ce, distill.targets(&data, device)),
            None => ce,
        };
        let delta = match mode {
            GateMode::Soft { delta } => delta,
            _ => 1.0,
        };
        let loss = match penalty.as_ref().and_then(|p| p.loss(&net, delta)) {
            Some(penalty) => data_loss + penalty,
            None => data_loss,
        };
        let value = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(NonFinite { step: i + 1, value });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step((plan.lr)(step), net, grads);
        if let Some(penalty) = penalty.as_mut() {
            penalty.after_step(&net);
            net = penalty.constrain(net);
        }

        steps += 1;
        loss_sum += value as f64;
        ce_sum += ce_value as f64;
        correct += hits;
        stats.images += data.len();
        stats.loss = loss_sum / steps as f64;
        stats.cross_entropy = ce_sum / steps as f64;
        stats.train_top1 = correct as f64 / stats.images as f64;
        on_step(i + 1, &stats);
    }
    stats.seconds = started.elapsed().as_secs_f64();
    Ok((net, stats))
}

fn count_correct(logits: Tensor<2>, targets: Tensor<1, Int>) -> usize {
    let predicted = logits.argmax(1).flatten::<1>(0, 1);
    predicted.equal(targets).int().sum().into_scalar::<i64>() as usize
}

/// Top-1 and top-5 accuracy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Fraction of images whose best logit is the label.
    pub top1: f64,
    /// Fraction whose label is among the five best logits.
    pub top5: f64,
    /// Images evaluated.
    pub images: usize,
    /// Images whose best logit is the label: `top1` as a count, which compares exactly.
    #[serde(default)]
    pub top1_hits: usize,
}

/// Counts top-1 and top-5 hits in a batch of logits (row-major `[batch, classes]`).
pub fn score_logits(logits: &[f32], classes: usize, labels: &[i64]) -> (usize, usize) {
    let (mut top1, mut top5) = (0, 0);
    for (row, &label) in logits.chunks(classes).zip(labels) {
        let target = row[label as usize];
        // Rank = how many classes score strictly higher (ties go to the label's favour only
        // when they are exact, which argmax also resolves to the first index).
        let better = row.iter().filter(|&&v| v > target).count();
        let earlier_ties = row[..label as usize]
            .iter()
            .filter(|&&v| v == target)
            .count();
        let rank = better + earlier_ties;
        if rank == 0 {
            top1 += 1;
        }
        if rank < 5 {
            top5 += 1;
        }
    }
    (top1, top5)
}

/// A logit that is not a number: the first one found by [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonFiniteLogit {
    /// 0-based index of the image in the evaluated set.
    pub image: usize,
    /// The logit.
    pub value: f32,
}

/// An evaluation: the accuracy, and each image's predicted class.
#[derive(Clone, Debug, PartialEq)]
pub struct Predictions {
    /// Top-1 and top-5 accuracy.
    pub accuracy: Accuracy,
    /// Each image's best class (the first of equal best logits, as top-1 counts it), in the
    /// order of the evaluated set.
    pub classes: Vec<u32>,
}

/// [`Predictions`] counted as batches come in.
pub struct PredictionTally {
    top1: usize,
    top5: usize,
    classes: Vec<u32>,
}

impl PredictionTally {
    /// A tally expecting about `images` images.
    pub fn with_capacity(images: usize) -> Self {
        Self {
            top1: 0,
            top5: 0,
            classes: Vec::with_capacity(images),
        }
    }

    /// Scores a batch of logits (row-major `[batch, classes]`) against its labels.
    pub fn add(&mut self, logits: &[f32], classes: usize, labels: &[i64]) {
        let (top1, top5) = score_logits(logits, classes, labels);
        self.top1 += top1;
        self.top5 += top5;
        self.classes
            .extend(logits.chunks(classes).map(|row| top1_class(row) as u32));
    }

    /// The accuracy and predictions of every batch added.
    pub fn finish(self) -> Predictions {
        let images = self.classes.len();
        let n = images.max(1) as f64;
        Predictions {
            accuracy: Accuracy {
                top1: self.top1 as f64 / n,
                top5: self.top5 as f64 / n,
                images,
                top1_hits: self.top1,
            },
            classes: self.classes,
        }
    }
}

/// Evaluates a forward function over every batch of `batcher` (epoch 0, unshuffled as built).
/// A NaN or infinite logit is an error, not a score: NaN compares false with everything, so it
/// would rank as a hit.
pub fn evaluate(
    batcher: &Batcher,
    classes: usize,
    device: &Device,
    forward: impl FnMut(Tensor<4>) -> Tensor<2>,
) -> Result<Accuracy, NonFiniteLogit> {
    predict(batcher, classes, device, forward).map(|p| p.accuracy)
}

/// [`evaluate`], keeping each image's predicted class.
pub fn predict(
    batcher: &Batcher,
    classes: usize,
    device: &Device,
    mut forward: impl FnMut(Tensor<4>) -> Tensor<2>,
) -> Result<Predictions, NonFiniteLogit> {
    let mut tally = PredictionTally::with_capacity(batcher.set().len());
    for data in batcher.epoch(0) {
        let logits = forward(data.images_tensor(device));
        let logits = logits.into_data().try_to_vec::<f32>().expect("f32 logits");
        if let Some((i, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(NonFiniteLogit {
                image: tally.classes.len() + i / classes.max(1),
                value,
            });
        }
        tally.add(&logits, classes, &data.labels);
    }
    Ok(tally.finish())
}

/// Evaluates a gated net (its inference copy) with its gates in `mode`.
pub fn evaluate_net(
    net: &GatedNet,
    mode: GateMode,
    batcher: &Batcher,
    device: &Device,
) -> Result<Accuracy, NonFiniteLogit> {
    let net = net.valid();
    let classes = net.plan.spec.num_classes;
    let device = device.clone().without_autodiff();
    evaluate(batcher, classes, &device, |x| net.forward(x, mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::TensorData;

    #[test]
    fn off_the_budget_the_gates_are_held_reversible_and_keep_their_ids() {
        use dnal_models::{GatedNetConfig, Shape3, model_spec};
        let device = Device::flex().autodiff();
        let spec = model_spec("vgg-small", Shape3::new(1, 28, 28), 10).unwrap();
        let mut net = GatedNetConfig::new(spec).init(&device).unwrap();
        // Scores from -1 to 1, far past the bound at delta 100 (0.04).
        for gate in &mut net.gates {
            let [n] = gate.s.dims();
            let s: Vec<f32> = (0..n).map(|i| 2.0 * i as f32 / n as f32 - 1.0).collect();
            gate.s = Param::from_tensor(Tensor::from_data(TensorData::new(s, [n]), &device));
        }
        let before: Vec<Vec<f32>> = net.gates.iter().map(|g| g.scores()).collect();
        let ids: Vec<_> = net.gates.iter().map(|g| g.s.id).collect();
        let mut landing = LandingDelta::new(100.0, 1e4, 10, 0.05, 100.0);
        landing.after_step(0.5);
        let bound = landing.reversible_bound().unwrap();
        assert!((bound * landing.delta - crate::schedule::REVERSIBLE_LOGIT).abs() < 1e-9);
        let mut penalty = GatePenalty {
            lambda: 1e-3,
            weights: vec![1.0; net.gates.len()],
            budget: None,
            delta: Some(landing),
            trace: None,
        };
        let net = penalty.constrain(net);
        for ((gate, was), id) in net.gates.iter().zip(&before).zip(&ids) {
            assert_eq!(gate.s.id, *id, "the optimizer's state is keyed by the id");
            assert!(gate.s.val().is_require_grad());
            let largest = was.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = bound as f32 / largest;
            for (&s, &w) in gate.scores().iter().zip(was) {
                assert!(s.abs() <= bound as f32 * (1.0 + 1e-6), "{s} past {bound}");
                // Every decision stays what it was, and the layer keeps its spacing: one
                // scale for all its gates, not a pile at the bound.
                assert_eq!(s > 0.0, w > 0.0);
                assert!((s - w * scale).abs() <= 1e-6 * bound as f32, "{s} for {w}");
            }
        }
        // A layer already within the bound is left exactly as it was.
        let held: Vec<Vec<f32>> = net.gates.iter().map(|g| g.scores()).collect();
        let net = penalty.constrain(net);
        for (gate, was) in net.gates.iter().zip(&held) {
            assert_eq!(&gate.scores(), was);
        }
        // In the band the gates are free.
        let mut free = landing;
        // A cost settled in the band (the band is tested on the cost's running mean).
        free.level = Some(1.01);
        free.after_step(1.01);
        assert_eq!(free.reversible_bound(), None);
        penalty.delta = Some(free);
        let mut net = net;
        for gate in &mut net.gates {
            gate.s = gate.s.clone().map(|s| s.mul_scalar(10.0));
        }
        let net = penalty.constrain(net);
        for (gate, was) in net.gates.iter().zip(&held) {
            for (&s, &w) in gate.scores().iter().zip(was) {
                assert_eq!(s, 10.0 * w);
            }
        }
    }

    /// 6 classes, 4 rows; with [`RANKED_LABELS`]: label best, label 3rd, label 6th, tie with
    /// an earlier class.
    const RANKED_LOGITS: [f32; 24] = [
        9.0, 1.0, 2.0, 3.0, 4.0, 5.0, //
        9.0, 8.0, 7.0, 1.0, 2.0, 3.0, //
        9.0, 8.0, 7.0, 6.0, 5.0, 1.0, //
        5.0, 5.0, 1.0, 1.0, 1.0, 1.0,
    ];
    const RANKED_LABELS: [i64; 4] = [0, 2, 5, 1];

    #[test]
    fn top1_and_top5_count_ranks() {
        let (top1, top5) = score_logits(&RANKED_LOGITS, 6, &RANKED_LABELS);
        assert_eq!(top1, 1);
        assert_eq!(top5, 3);
    }

    #[test]
    fn predictions_are_the_classes_top1_counts() {
        // The same rows in two batches: the best class is the first of equal best logits,
        // so a tie with an earlier class predicts that class, and the label misses.
        let mut tally = PredictionTally::with_capacity(4);
        tally.add(&RANKED_LOGITS[..12], 6, &RANKED_LABELS[..2]);
        tally.add(&RANKED_LOGITS[12..], 6, &RANKED_LABELS[2..]);
        let predictions = tally.finish();
        assert_eq!(predictions.classes, [0, 0, 0, 0]);
        let accuracy = predictions.accuracy;
        assert_eq!((accuracy.images, accuracy.top1_hits), (4, 1));
        assert_eq!((accuracy.top1, accuracy.top5), (0.25, 0.75));
    }

    #[test]
    fn non_finite_logits_are_an_error_not_a_hit() {
        use dnal_datasets::{ImageSet, Normalization, Shape3};
        let shape = Shape3::new(1, 1, 1);
        let classes = vec!["a".to_string(), "b".to_string()];
        let set = ImageSet::new(shape, vec![0u8; 5], vec![0, 1, 0, 1, 0], classes).unwrap();
        let norm = Normalization {
            mean: vec![0.0],
            std: vec![1.0],
        };
        let batcher = Batcher::new(set, norm, 2);
        let device = Device::flex();
        let forward = |bad: f32| {
            move |x: Tensor<4>| {
                let n = x.dims()[0];
                let mut v = vec![0.0f32; n * 2];
                if n == 1 {
                    v[1] = bad;
                }
                Tensor::<2>::from_data(TensorData::new(v, [n, 2]), &x.device())
            }
        };
        // Images 0-1 and 2-3 are finite; the last batch (image 4) holds the bad logit.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = evaluate(&batcher, 2, &device, forward(bad)).unwrap_err();
            assert_eq!(err.image, 4);
            assert!(err.value.is_nan() == bad.is_nan());
        }
        let ok = evaluate(&batcher, 2, &device, forward(0.0)).unwrap();
        assert_eq!(ok.images, 5);
    }
}
