//! Budgets: the gate stage steers lambda_a so that the binarised network meets a cost target,
//! and the final masks are fitted to land at or under it.
//!
//! Two parts:
//! - [`BudgetControl`] adjusts lambda_a after every gate-stage step from the cost of the network
//!   the gates describe *now* (their signs), so lambda_a settles where the gates' decisions meet
//!   the target while delta is still small enough for decisions to change;
//! - [`fit_to_budget`] then picks the kept channels as those whose `s` exceeds a threshold
//!   `tau` (DNAL's rule is `tau = 0`), with the lowest `tau` whose network fits the budget, so the
//!   result lands just under it even where the controller ended a little off.

use std::sync::Arc;

use dnal_models::{ChannelMasks, CostModel, GatedNet, NetPlan};
use serde::{Deserialize, Serialize};

use crate::error::SearchError;

/// A cost the gates can be steered to, as a function of the channel count of every group.
pub trait CostEstimate: Send + Sync {
    /// What the cost counts, for messages (`MACs`, `ms`).
    fn unit(&self) -> &'static str;
    /// The cost with `counts[g]` channels in group `g` (fractional counts allowed).
    fn total(&self, counts: &[f64]) -> f64;
    /// How much the cost grows per channel of `group` at these counts.
    fn marginal(&self, group: usize, counts: &[f64]) -> f64;
}

/// A cost counted from the network's plan: its multiply-accumulates or its parameters, both
/// polynomials in the channel counts ([`CostModel`]).
#[derive(Clone, Debug)]
pub struct PlanCost {
    model: CostModel,
    unit: &'static str,
}

impl PlanCost {
    /// The MACs of a network's plan.
    pub fn macs(plan: &NetPlan) -> Self {
        Self {
            model: plan.flops.clone(),
            unit: "MACs",
        }
    }

    /// The parameters of a network's plan (as deployed: batch norm folded into the convs).
    pub fn params(plan: &NetPlan) -> Self {
        Self {
            model: plan.params.clone(),
            unit: "params",
        }
    }
}

impl CostEstimate for PlanCost {
    fn unit(&self) -> &'static str {
        self.unit
    }

    fn total(&self, counts: &[f64]) -> f64 {
        self.model.total(counts)
    }

    fn marginal(&self, group: usize, counts: &[f64]) -> f64 {
        self.model.marginal(group, counts)
    }
}

/// A budget on one cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Budget {
    /// At most this many multiply-accumulates per image.
    Flops(f64),
    /// At most this share (in (0, 1]) of the parent's multiply-accumulates per image: a budget
    /// that means the same on any dataset and model ([`Budget::resolve`] turns it into MACs).
    FlopsShare(f64),
    /// At most this many milliseconds per image on the board (from its latency table).
    LatencyMs(f64),
    /// At most this many parameters (weights and biases as deployed): what the board's flash
    /// holds, 4 bytes each in f32 and about 1 in int8.
    Params(f64),
    /// At most this share (in (0, 1]) of the parent's parameters.
    ParamsShare(f64),
}

/// The budget of a search given neither `--lambda` nor a budget: 40% of the parent's MACs,
/// about what the fixed lambda_a 6e-3 kept on Fashion-MNIST (2.46x fewer MACs). A fixed
/// lambda_a prunes steeply and differently on every dataset (on a small one it can close
/// nearly every channel); a share of the parent cannot collapse the network.
pub const DEFAULT_FLOPS_SHARE: f64 = 0.4;

impl Budget {
    /// The target value (for [`Budget::FlopsShare`], the share).
    pub fn target(self) -> f64 {
        match self {
            Budget::Flops(x)
            | Budget::FlopsShare(x)
            | Budget::LatencyMs(x)
            | Budget::Params(x)
            | Budget::ParamsShare(x) => x,
        }
    }

    /// The CLI option that sets it.
    pub fn option(self) -> &'static str {
        match self {
            Budget::Flops(_) | Budget::FlopsShare(_) => "--flops-budget",
            Budget::LatencyMs(_) => "--latency-budget-ms",
            Budget::Params(_) | Budget::ParamsShare(_) => "--params-budget",
        }
    }

    /// The budget in the cost's own unit: a share of the parent becomes MACs or parameters of
    /// the parent `plan`; the others are already absolute.
    pub fn resolve(self, plan: &NetPlan) -> Budget {
        let parent = plan.full_counts();
        match self {
            Budget::FlopsShare(share) => Budget::Flops(share * plan.flops.total(&parent)),
            Budget::ParamsShare(share) => Budget::Params(share * plan.params.total(&parent)),
            absolute => absolute,
        }
    }

    /// Whether this is a share of the parent's cost rather than an absolute one.
    pub fn is_share(self) -> bool {
        matches!(self, Budget::FlopsShare(_) | Budget::ParamsShare(_))
    }

    /// Whether the target is one this budget can take.
    pub fn is_valid(self) -> bool {
        let x = self.target();
        x.is_finite() && x > 0.0 && (!self.is_share() || x <= 1.0)
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Budget::Flops(macs) => write!(f, "{macs:.0} MACs"),
            Budget::FlopsShare(share) => write!(f, "{}% of the parent's MACs", 100.0 * share),
            Budget::LatencyMs(ms) => write!(f, "{ms} ms"),
            Budget::Params(params) => write!(f, "{params:.0} params"),
            Budget::ParamsShare(share) => write!(f, "{}% of the parent's params", 100.0 * share),
        }
    }
}

/// Channel counts per group under the gates' current signs (`s > 0`), as pruning would keep
/// them ([`ChannelMasks::from_gates`]: at least one per group, or per set of a supernet's
/// branches).
pub fn hard_counts(net: &GatedNet) -> Vec<f64> {
    ChannelMasks::from_gates(net).counts()
}

/// Expected channel counts per group under soft gates at `delta`.
pub fn expected_counts(net: &GatedNet, delta: f64) -> Vec<f64> {
    let mut counts = net.plan.full_counts();
    for (gate, g) in net.gates.iter().enumerate() {
        counts[net.plan.groups.group_of_gate[gate]] = g
            .scores()
            .iter()
            .map(|&s| 1.0 / (1.0 + (-(delta * s as f64)).exp()))
            .sum();
    }
    counts
}

/// Steers lambda_a towards the value at which the gates' decisions meet a cost target.
///
/// It integrates the error of the cost it expects `horizon` steps ahead along the cost's
/// recent trend, not of the cost now: the gates move with momentum and decide only when they
/// cross zero, so the cost lags lambda_a. Steered by the cost now, lambda_a kept rising while
/// the gates were already on their way down, and they overshot to 23% under the budget
/// (vgg-small at 25% of its MACs), where channels reopen too slowly to come back.
///
/// While delta grows towards the approach the gates answer lambda_a only in part
/// ([`crate::schedule::LandingDelta::response`]: about `(delta / approach)²`), and the
/// controller moves lambda_a by that share of its step. At the full step, in the first 25
/// steps of vgg-small's 141-step stages on M7 latency budgets, it lowered lambda_a to 10-32x
/// under where it ended, while delta was under 30 and the gates, all closed, could not
/// answer; then they opened all at once to 1.7-3.5x the budget, and the swing back took half
/// the stage. Scaled, lambda_a ends within 1.3-7.5x of its lowest and the gates peak at
/// 1.1-2.1x.
///
/// Under the target and rising while their answer quickens (delta growing,
/// [`crate::schedule::LandingDelta::quickening`]) it holds lambda_a (conditional
/// integration, the usual cure for integral windup): the gates are already answering a lower
/// lambda_a, and lowering it on would only store up an overshoot. Gates held at the
/// reversible bound answer slowly while delta is small and then all at once: on
/// MobileNetV2's full data the controller lowered lambda_a 36x while they crept from 13% to
/// 23% of a budget, to 0.07x the value they settled at; then they opened past the budget
/// within 30 steps, and on to 1.72x it. Once delta has stopped growing a climb is their
/// answer, perhaps to an equilibrium under the target: a hold that ran on past delta's
/// growth (a 141-step stage at 60% of MobileNetV2's MACs) left the gates 24% under the
/// budget, against 12% when it stops with it.
#[derive(Clone)]
pub struct BudgetControl {
    /// The target cost.
    pub target: f64,
    /// How fast log(lambda_a) moves per step at full error.
    pub gain: f64,
    /// The cost being steered.
    pub estimate: Arc<dyn CostEstimate>,
    /// Steps ahead the controller looks along the cost's trend.
    pub horizon: f64,
    /// The least rise per step, in the cost's unit, that counts as the gates climbing towards
    /// the target (and holds lambda_a): a trend that decays after the gates stall stays
    /// positive for ever, and must not hold it.
    pub climb: f64,
    /// Where the cost is heading.
    pub trend: CostTrend,
}

/// The cost's recent course, which [`BudgetControl`] looks ahead along (kept with a search's
/// checkpoints, so that a resumed gate stage steers as the uninterrupted one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostTrend {
    /// The cost's change per step, a running mean (weight 0.2 on the newest).
    pub per_step: f64,
    /// The cost after the last step.
    pub last: Option<f64>,
}

impl std::fmt::Debug for BudgetControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetControl")
            .field("target", &self.target)
            .field("gain", &self.gain)
            .field("unit", &self.estimate.unit())
            .finish()
    }
}

impl BudgetControl {
    /// The new lambda_a after a step whose gates describe a network of cost `cost`:
    /// `log(lambda) += response * gain * clamp(ahead / target - 1, -1, 1)`, where `ahead =
    /// cost + horizon * trend.per_step` and `response` (in (0, 1]) is how fully the gates
    /// answer lambda_a now; unchanged while their answer is still quickening (`response`
    /// under 1) and the cost is under the target and rising by more than `climb` a step.
    pub fn update(&mut self, lambda: f64, cost: f64, response: f64) -> f64 {
        let trend = &mut self.trend;
        if let Some(last) = trend.last {
            trend.per_step += 0.2 * (cost - last - trend.per_step);
        }
        trend.last = Some(cost);
        let quickening = response < 1.0;
        if quickening && cost < self.target && trend.per_step > self.climb {
            return lambda;
        }
        let ahead = cost + self.horizon * trend.per_step;
        let error = (ahead / self.target - 1.0).clamp(-1.0, 1.0);
        (lambda * (response.clamp(0.0, 1.0) * self.gain * error).exp()).clamp(1e-8, 1e3)
    }
}

/// Samples a gate stage keeps per epoch of its course ([`LandingTrace`]): enough to see the
/// controller swing within an epoch, few enough that a long stage's report stays small.
pub const LANDING_SAMPLES_PER_EPOCH: usize = 64;

/// The course of a budget-mode gate stage, step by step (every `stride`-th step): what the
/// per-epoch lines cannot show, such as the gates overshooting within an epoch while
/// lambda_a was still rising. Kept in `report.json` (`budget.trace`) and drawn as
/// `landing.svg`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LandingTrace {
    /// Steps in one epoch of the stage.
    pub steps_per_epoch: usize,
    /// Steps between samples.
    pub stride: usize,
    /// Gate-stage steps so far.
    pub steps: usize,
    /// The budget the cost ratios are shares of, in the budget's unit.
    pub target: f64,
    /// How far off the budget (a share of it) the gates may be before delta is held
    /// ([`crate::schedule::LandingDelta::band`]).
    pub band: f64,
    /// The samples, oldest first.
    pub samples: Vec<LandingSample>,
}

/// One step of a gate stage's [`LandingTrace`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LandingSample {
    /// The gate-stage step (1-based, counted over all its epochs).
    pub step: usize,
    /// The cost of the network the gates' signs describe after the step, as a share of the
    /// budget (1: on it).
    pub cost_ratio: f64,
    /// lambda_a the step ran with.
    pub lambda: f64,
    /// delta the step ran at.
    pub delta: f64,
}

impl LandingTrace {
    /// An empty trace of a stage with `steps_per_epoch` steps an epoch, towards `target`,
    /// whose delta is held off `band`.
    pub fn new(steps_per_epoch: usize, target: f64, band: f64) -> Self {
        Self {
            steps_per_epoch,
            stride: steps_per_epoch.div_ceil(LANDING_SAMPLES_PER_EPOCH).max(1),
            steps: 0,
            target,
            band,
            samples: Vec::new(),
        }
    }

    /// Counts a step, and keeps it when it is the first or falls on the stride.
    pub fn record(&mut self, cost: f64, lambda: f64, delta: f64) {
        self.steps += 1;
        if self.steps == 1 || self.steps.is_multiple_of(self.stride) {
            self.samples.push(LandingSample {
                step: self.steps,
                cost_ratio: cost / self.target,
                lambda,
                delta,
            });
        }
    }
}

/// How [`fit_to_budget`] changed DNAL's `s > 0` rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetFit {
    /// The target.
    pub target: f64,
    /// Cost of the network DNAL's rule (`s > 0`) keeps.
    pub cost_at_zero: f64,
    /// Cost of the network kept.
    pub cost: f64,
    /// The `s` the ranking stopped at, the highest of the channels it closed: every kept
    /// channel's `s` is at or above it (channels of equal `s` are kept the cheaper first), but
    /// the [`free`](Self::free) ones.
    pub threshold: f32,
    /// Channels the rule `s > 0` closed that the fit keeps.
    pub reopened: usize,
    /// Channels the rule `s > 0` kept that the fit closes.
    pub closed: usize,
    /// Channels under the threshold kept because the cost says they are free: they fill a
    /// register block of a kernel that runs a partly filled block's channels slower, so the
    /// layer costs no more with them (a latency table knows this; MACs and parameters never
    /// fall with more channels). The fit finds them with `open_free_channels`.
    #[serde(default)]
    pub free: usize,
    /// How far the gate stage itself landed from the budget before the fit: `cost_at_zero /
    /// budget - 1`, in percent (negative: under it, and the fit reopened channels). The
    /// closer to 0, the more the network is DNAL's choice at this budget rather than the
    /// threshold's.
    #[serde(default)]
    pub landing_pct: f64,
}

/// Refuses a budget that no pruning can meet, before any training: the cheapest network the
/// groups allow (one channel in every gated group) must fit.
pub fn check_reachable(
    plan: &NetPlan,
    estimate: &dyn CostEstimate,
    budget: Budget,
) -> Result<(), SearchError> {
    let mut counts = plan.full_counts();
    for &group in &plan.groups.group_of_gate {
        counts[group] = 1.0;
    }
    // Of a supernet's parallel branches one survives.
    for set in &plan.groups.branch_sets {
        for branch in &set.branches[1..] {
            counts[branch.group] = 0.0;
        }
    }
    let smallest = estimate.total(&counts);
    if smallest > budget.target() {
        return Err(SearchError::InvalidOption {
            option: budget.option(),
            value: format!("{} {}", budget.target(), estimate.unit()),
            reason: format!(
                "even one channel per layer costs {smallest:.4} {}; the model cannot be pruned that far: raise the budget or pick a smaller model",
                estimate.unit()
            ),
        });
    }
    Ok(())
}

/// The masks keeping the channels with `s > tau` (at least one per group, or per set of a
/// supernet's branches: [`ChannelMasks::above`]), for the lowest `tau` whose network costs at most
/// `target`. Channels of equal `s` are taken one at a time, the cheaper first: gates clamped to the
/// reversible bound ([`crate::schedule::LandingDelta::reversible_bound`], which they are now scaled
/// into instead) left many at the same `s` when a gate stage ended off the budget, and a threshold
/// alone could only keep or close all of them at once, landing far under the budget. Every
/// candidate also keeps the channels that cost nothing (`open_free_channels`), so the threshold
/// can go lower where a latency table says some layers are cheaper with a full register block.
pub fn fit_to_budget(
    net: &GatedNet,
    estimate: &dyn CostEstimate,
    target: f64,
) -> Result<(ChannelMasks, BudgetFit), SearchError> {
    let scores: Vec<Vec<f32>> = net.gates.iter().map(|g| g.scores()).collect();
    let ranks = channel_ranks(net, &scores, estimate);
    // Keeping the channels of rank k and above: k = 0 keeps all, k = n none (but the one
    // per group that `above` keeps).
    let keep_ranks = |k: usize| {
        let mut masks = ChannelMasks::above(&net.plan, &ranks.rank, k as f32 - 0.5);
        let free = open_free_channels(&mut masks, &net.plan, &ranks, estimate);
        (masks, free)
    };
    let masks_from = |k: usize| keep_ranks(k).0;
    let cost_of = |masks: &ChannelMasks| estimate.total(&masks.counts());
    let n = ranks.order.len();
    if cost_of(&masks_from(n)) > target {
        return Err(SearchError::InvalidOption {
            option: "budget",
            value: format!("{target:.4} {}", estimate.unit()),
            reason: format!(
                "even one channel per layer costs {:.4} {}; the model cannot be pruned that far, raise the budget or pick a smaller model",
                cost_of(&masks_from(n)),
                estimate.unit()
            ),
        });
    }
    // Cost falls as k rises (nearly: a free channel can make a fit of lower k cheaper):
    // find the lowest k that fits. `hi` fits throughout, so the result does.
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if cost_of(&masks_from(mid)) <= target {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let (masks, free) = keep_ranks(lo);
    // In `s`: the highest channel's that the ranking closed.
    let threshold = match lo.checked_sub(1) {
        Some(last_closed) => {
            let (gate, channel) = ranks.order[last_closed];
            scores[gate][channel]
        }
        None => scores
            .iter()
            .flatten()
            .copied()
            .fold(f32::INFINITY, f32::min)
            .next_down(),
    };
    let dnal = ChannelMasks::from_gates(net);
    let (mut reopened, mut closed) = (0, 0);
    for (a, b) in masks.keep.iter().zip(&dnal.keep) {
        for (&kept, &dnal_kept) in a.iter().zip(b) {
            reopened += usize::from(kept && !dnal_kept);
            closed += usize::from(!kept && dnal_kept);
        }
    }
    let cost_at_zero = cost_of(&dnal);
    let fit = BudgetFit {
        target,
        cost_at_zero,
        landing_pct: 100.0 * (cost_at_zero / target - 1.0),
        cost: cost_of(&masks),
        threshold,
        reopened,
        closed,
        free,
    };
    Ok((masks, fit))
}

/// How many more channels of a group [`open_free_channels`] looks at: a register block of
/// up to 8 channels.
const FREE_CHANNEL_REACH: usize = 7;

/// Opens, in every gated group that keeps a channel, the most of its next closed channels
/// (by rank, up to [`FREE_CHANNEL_REACH`]) with which the network costs no more; returns how
/// many. Kernels that compute a register block of output channels at a time run the
/// channels of a partly filled block slower, so a layer can cost less with one more
/// channel: on the Cortex-M7, MobileNetV2's f32 stem measured 94,290 instructions at 3
/// channels and 78,947 at 4. Only a cost that knows the kernels (a latency table) falls
/// so; MACs and parameters grow with every channel and open none. A supernet's branch
/// that lost all its channels stays removed.
fn open_free_channels(
    masks: &mut ChannelMasks,
    plan: &NetPlan,
    ranks: &ChannelRanks,
    estimate: &dyn CostEstimate,
) -> usize {
    let mut counts = masks.counts();
    let mut cost = estimate.total(&counts);
    let mut opened = 0;
    for (gate, best_first) in ranks.best_first.iter().enumerate() {
        let group = plan.groups.group_of_gate[gate];
        let kept = counts[group];
        if kept == 0.0 {
            continue;
        }
        let closed: Vec<usize> = best_first
            .iter()
            .copied()
            .filter(|&c| !masks.keep[group][c])
            .take(FREE_CHANNEL_REACH)
            .collect();
        // The most channels that cost no more, and the cost with them.
        let mut take = (0, cost);
        for more in 1..=closed.len() {
            counts[group] = kept + more as f64;
            let with = estimate.total(&counts);
            if with <= cost {
                take = (more, with);
            }
        }
        let (more, with) = take;
        counts[group] = kept + more as f64;
        cost = with;
        for &channel in &closed[..more] {
            masks.keep[group][channel] = true;
        }
        opened += more;
    }
    opened
}

/// Every gated channel in the order [`fit_to_budget`] keeps them: by `s`, and among equal
/// `s` the channel whose group costs less per channel (`estimate`'s marginal in the parent)
/// ranks higher, then the later gate and channel (an order every run repeats).
struct ChannelRanks {
    /// `(gate, channel)` from the lowest rank (closed first) to the highest.
    order: Vec<(usize, usize)>,
    /// Each channel's rank, shaped as the gates' scores.
    rank: Vec<Vec<f32>>,
    /// Per gate, its channels from the highest rank (closed last) to the lowest.
    best_first: Vec<Vec<usize>>,
}

fn channel_ranks(net: &GatedNet, scores: &[Vec<f32>], estimate: &dyn CostEstimate) -> ChannelRanks {
    let full = net.plan.full_counts();
    let per_channel: Vec<f64> = net
        .plan
        .groups
        .group_of_gate
        .iter()
        .map(|&g| estimate.marginal(g, &full))
        .collect();
    let mut order: Vec<(usize, usize)> = scores
        .iter()
        .enumerate()
        .flat_map(|(gate, s)| (0..s.len()).map(move |channel| (gate, channel)))
        .collect();
    order.sort_by(|&a, &b| {
        scores[a.0][a.1]
            .total_cmp(&scores[b.0][b.1])
            .then(per_channel[b.0].total_cmp(&per_channel[a.0]))
            .then(a.cmp(&b))
    });
    let mut rank: Vec<Vec<f32>> = scores.iter().map(|s| vec![0.0; s.len()]).collect();
    for (r, &(gate, channel)) in order.iter().enumerate() {
        // Exact: ranks stay far below f32's 2^24 integers.
        rank[gate][channel] = r as f32;
    }
    let mut best_first: Vec<Vec<usize>> = vec![Vec::new(); scores.len()];
    for &(gate, channel) in order.iter().rev() {
        best_first[gate].push(channel);
    }
    ChannelRanks {
        order,
        rank,
        best_first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[test]
    fn a_share_of_the_parent_resolves_to_its_cost_and_others_stay() {
        let plan = net_with_scores(0).plan;
        let full = plan.full_counts();
        let (macs, params) = (plan.flops.total(&full), plan.params.total(&full));
        assert_eq!(
            Budget::FlopsShare(0.4).resolve(&plan),
            Budget::Flops(0.4 * macs)
        );
        assert_eq!(
            Budget::ParamsShare(0.1).resolve(&plan),
            Budget::Params(0.1 * params)
        );
        for absolute in [
            Budget::Flops(5e5),
            Budget::Params(2.5e4),
            Budget::LatencyMs(20.0),
        ] {
            assert_eq!(absolute.resolve(&plan), absolute);
        }
        assert_eq!(Budget::FlopsShare(0.4).option(), "--flops-budget");
        assert_eq!(Budget::Params(1.0).option(), "--params-budget");
        assert_eq!(
            Budget::FlopsShare(0.25).to_string(),
            "25% of the parent's MACs"
        );
        assert_eq!(Budget::Params(25e3).to_string(), "25000 params");
        // A share is in (0, 1]; a count or a time only positive.
        assert!(Budget::FlopsShare(1.0).is_valid() && Budget::Flops(2.0).is_valid());
        assert!(Budget::ParamsShare(0.5).is_valid() && Budget::Params(2.0).is_valid());
        for bad in [
            Budget::FlopsShare(1.5),
            Budget::FlopsShare(0.0),
            Budget::ParamsShare(1.01),
            Budget::Params(0.0),
            Budget::Flops(f64::NAN),
            Budget::LatencyMs(-1.0),
        ] {
            assert!(!bad.is_valid(), "{bad:?}");
        }
    }
    use burn::tensor::{Device, Tensor, TensorData};
    use dnal_models::{GatedNetConfig, Shape3, model_spec};

    fn net_with_scores(seed: u64) -> GatedNet {
        let device = Device::flex();
        let spec = model_spec("vgg-small", Shape3::new(1, 28, 28), 10).unwrap();
        let mut net = GatedNetConfig::new(spec).init(&device).unwrap();
        let mut x = seed;
        for gate in &mut net.gates {
            let [n] = gate.s.dims();
            let s: Vec<f32> = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.6
                })
                .collect();
            gate.s = Param::from_tensor(Tensor::from_data(TensorData::new(s, [n]), &device));
        }
        net
    }

    #[test]
    fn the_fit_lands_at_or_just_under_the_budget_both_ways() {
        let net = net_with_scores(1);
        let flops = PlanCost::macs(&net.plan);
        let dnal_cost = flops.total(&ChannelMasks::from_gates(&net).counts());
        for target in [0.3 * dnal_cost, 0.9 * dnal_cost, 1.5 * dnal_cost] {
            let (masks, fit) = fit_to_budget(&net, &flops, target).unwrap();
            let cost = flops.total(&masks.counts());
            assert!(cost <= target, "{cost} > {target}");
            assert_eq!(cost, fit.cost);
            // One more channel (the next threshold down) would not fit: it is the largest.
            assert!(cost > 0.85 * target, "{cost} far under {target}");
            // MACs grow with every channel: none is free.
            assert_eq!(fit.free, 0);
            if target < dnal_cost {
                assert!(fit.closed > 0 && fit.reopened == 0);
            } else {
                assert!(fit.reopened > 0 && fit.closed == 0);
            }
            // The gate stage's own landing, relative to the target.
            let landing = 100.0 * (dnal_cost / target - 1.0);
            assert!((fit.landing_pct - landing).abs() < 1e-9, "{fit:?}");
        }
        let err = fit_to_budget(&net, &flops, 10.0).unwrap_err().to_string();
        assert!(err.contains("one channel per layer"), "{err}");
    }

    /// A latency-like cost: each group's channels run in register blocks of 4 (40 a block),
    /// and a partly filled block's channels on a slower path (20 each), as the f32 dense
    /// conv's do.
    struct BlockedCost;

    impl CostEstimate for BlockedCost {
        fn unit(&self) -> &'static str {
            "ms"
        }
        fn total(&self, counts: &[f64]) -> f64 {
            counts
                .iter()
                .map(|&n| {
                    let n = n as usize;
                    40.0 * (n / 4) as f64 + 20.0 * (n % 4) as f64
                })
                .sum()
        }
        fn marginal(&self, _group: usize, _counts: &[f64]) -> f64 {
            10.0
        }
    }

    #[test]
    fn channels_that_fill_a_register_block_for_free_are_kept() {
        let net = net_with_scores(5);
        let gated: Vec<usize> = net.plan.groups.group_of_gate.clone();
        let full = BlockedCost.total(&net.plan.full_counts());
        let mut free_somewhere = false;
        for share in [0.2, 0.35, 0.5, 0.7] {
            let target = share * full;
            let (masks, fit) = fit_to_budget(&net, &BlockedCost, target).unwrap();
            let counts = masks.counts();
            assert!(fit.cost <= target && fit.cost == BlockedCost.total(&counts));
            // 4k + 2 and 4k + 3 channels cost as much as or more than 4k + 4: no gated
            // group (of 32 to 128 channels, so with closed ones left) ends there.
            for &group in &gated {
                let n = counts[group] as usize;
                assert!(n % 4 < 2, "group {group} keeps {n} of {:?}", counts);
            }
            // The free channels do not stop the ranking from spending the budget.
            assert!(fit.cost > target - 80.0, "{} under {target}", fit.cost);
            free_somewhere |= fit.free > 0;
        }
        assert!(free_somewhere, "no fit needed a free channel");
    }

    #[test]
    fn channels_of_equal_s_are_fitted_one_at_a_time() {
        // Every gate at the same s, as a clamp to the reversible bound left them: a threshold
        // alone could keep all or one per layer.
        let mut net = net_with_scores(4);
        for gate in &mut net.gates {
            let [n] = gate.s.dims();
            let device = gate.s.device();
            gate.s = Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![-0.04f32; n], [n]),
                &device,
            ));
        }
        let flops = PlanCost::macs(&net.plan);
        let full = flops.total(&net.plan.full_counts());
        let (masks, fit) = fit_to_budget(&net, &flops, 0.5 * full).unwrap();
        let cost = flops.total(&masks.counts());
        assert!(cost <= 0.5 * full && cost > 0.47 * full, "{cost} of {full}");
        assert_eq!(fit.threshold, -0.04);
        assert!(fit.reopened > 0, "{fit:?}");
    }

    #[test]
    fn an_unreachable_budget_is_refused_from_the_plan_alone() {
        let plan = net_with_scores(3).plan;
        let flops = PlanCost::macs(&plan);
        let err = check_reachable(&plan, &flops, Budget::Flops(1.0)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--flops-budget") && text.contains("one channel per layer"),
            "{text}"
        );
        let full = flops.total(&plan.full_counts());
        check_reachable(&plan, &flops, Budget::Flops(0.05 * full)).unwrap();
    }

    #[test]
    fn a_landing_trace_keeps_the_first_step_and_every_strideth() {
        // 469 steps an epoch (Fashion-MNIST at batch 128): a sample every 8 steps.
        let mut trace = LandingTrace::new(469, 20.0, 0.05);
        assert_eq!(trace.stride, 8);
        for step in 1..=3 * 469 {
            trace.record(20.0 + step as f64, 1e-3, 2.0);
        }
        assert_eq!(trace.steps, 1407);
        let steps: Vec<usize> = trace.samples.iter().map(|s| s.step).collect();
        assert_eq!(steps[..3], [1, 8, 16]);
        assert_eq!(*steps.last().unwrap(), 1400);
        assert_eq!(steps.len(), 1 + 1407 / 8);
        // The ratio is of the target; lambda and delta are the step's.
        let last = trace.samples.last().unwrap();
        assert_eq!(last.cost_ratio, (20.0 + 1400.0) / 20.0);
        assert_eq!((last.lambda, last.delta), (1e-3, 2.0));
        // A tiny stage keeps every step.
        let mut small = LandingTrace::new(5, 1.0, 0.05);
        for _ in 0..5 {
            small.record(1.0, 1.0, 1.0);
        }
        assert_eq!(small.samples.len(), 5);
    }

    #[test]
    fn the_controller_raises_lambda_over_budget_and_lowers_it_under() {
        let mut control = BudgetControl {
            target: 100.0,
            gain: 0.1,
            estimate: Arc::new(PlanCost::macs(&net_with_scores(2).plan)),
            horizon: 0.0,
            climb: 0.1,
            trend: CostTrend::default(),
        };
        assert!(control.update(1e-3, 150.0, 1.0) > 1e-3);
        assert!(control.update(1e-3, 50.0, 1.0) < 1e-3);
        assert_eq!(control.update(1e-3, 100.0, 1.0), 1e-3);
        // Far off, the step is bounded.
        assert!((control.update(1e-3, 1e9, 1.0) / 1e-3 - 0.1f64.exp()).abs() < 1e-12);
        // While the gates answer a quarter as much (delta at half the approach's), a quarter
        // of the step, both ways.
        assert!((control.update(1e-3, 1e9, 0.25) / 1e-3 - 0.025f64.exp()).abs() < 1e-12);
        let mut fresh = BudgetControl {
            trend: CostTrend::default(),
            ..control.clone()
        };
        assert!((fresh.update(1e-3, 0.0, 0.25) / 1e-3 - (-0.025f64).exp()).abs() < 1e-12);
        // Looking ahead: over the target but falling fast towards it, lambda_a is lowered
        // before the cost gets there (the trend after 200 -> 150 is -10 per step).
        let mut ahead = BudgetControl {
            horizon: 10.0,
            trend: CostTrend::default(),
            ..control.clone()
        };
        assert!(ahead.update(1e-3, 200.0, 1.0) > 1e-3);
        assert!(ahead.update(1e-3, 150.0, 1.0) < 1e-3);
        // Steady over it, it raises lambda_a again.
        for _ in 0..40 {
            ahead.update(1e-3, 150.0, 1.0);
        }
        assert!(ahead.update(1e-3, 150.0, 1.0) > 1e-3);
    }

    #[test]
    fn the_controller_holds_lambda_while_the_gates_climb_towards_the_budget() {
        let control = BudgetControl {
            target: 100.0,
            gain: 0.1,
            estimate: Arc::new(PlanCost::macs(&net_with_scores(2).plan)),
            horizon: 10.0,
            climb: 0.1,
            trend: CostTrend::default(),
        };
        // Far under the target and falling: lowered.
        let mut falling = control.clone();
        assert!(falling.update(1e-3, 30.0, 0.5) < 1e-3);
        assert!(falling.update(1e-3, 20.0, 0.5) < 1e-3);
        // Climbing by 1 a step, far under it (looking 10 steps ahead alone would lower it):
        // held once the trend shows the climb.
        let mut climbing = control.clone();
        let mut lambda = 1e-3;
        for cost in (10..20).map(f64::from) {
            lambda = climbing.update(lambda, cost, 0.5);
        }
        let held = lambda;
        for cost in (20..60).map(f64::from) {
            lambda = climbing.update(lambda, cost, 0.5);
        }
        assert_eq!(lambda, held);
        // The same climb once delta has stopped growing is the gates' answer to this
        // lambda_a, maybe an equilibrium under the target: lowered all along.
        let mut answered = control.clone();
        let mut lowered = 1e-3;
        for cost in (10..60).map(f64::from) {
            let next = answered.update(lowered, cost, 1.0);
            assert!(next < lowered, "{cost}");
            lowered = next;
        }
        // Stalled under it: lowered again once the trend has decayed under `climb`.
        for _ in 0..40 {
            lambda = climbing.update(lambda, 60.0, 0.5);
        }
        assert!(lambda < held);
        // Climbing past it: raised.
        let before = lambda;
        for cost in [90.0, 110.0, 130.0] {
            lambda = climbing.update(lambda, cost, 0.5);
        }
        assert!(lambda > before);
    }
}
