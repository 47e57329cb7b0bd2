//! What one channel costs: the `c_l` of DNAL's architecture loss.

use std::fmt;
use std::str::FromStr;

use dnal_models::NetPlan;
use serde::{Deserialize, Serialize};

use crate::budget::CostEstimate;
use crate::error::SearchError;

/// How the architecture loss weighs a channel of each gated group.
///
/// Either way the weights are normalised to a channel-weighted mean of 1 (`sum_l c_l * n_l =
/// sum_l n_l` over the gated groups, `n_l` channels each), so that `lambda_a` keeps the
/// paper's scale: it is the push on one channel of average cost (the paper's values are
/// 1e-5 to 5e-4 on CIFAR-10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CostWeighting {
    /// `c_l = 1` for every gate, as in the paper.
    Uniform,
    /// `c_l` proportional to the multiply-accumulates one channel of the group costs in the
    /// unpruned network (in the layers that write it and in those that read it).
    Flops,
    /// `c_l` proportional to the board latency one channel of the group costs in the unpruned
    /// network, from the board's measured latency table.
    Latency,
    /// `c_l` proportional to the parameters one channel of the group costs in the unpruned
    /// network (what it takes of the board's flash): the late, narrow-image layers of a mobile
    /// network hold most of them at few MACs.
    Params,
}

impl CostWeighting {
    /// Every weighting's name, as `--cost` takes it.
    pub const NAMES: &[&str] = &["uniform", "flops", "latency", "params"];

    /// `c_l` for every gate of the network; `latency` is the board's cost, which
    /// [`CostWeighting::Latency`] needs.
    pub fn weights(
        self,
        plan: &NetPlan,
        latency: Option<&dyn CostEstimate>,
    ) -> Result<Vec<f64>, SearchError> {
        let gates = &plan.groups.group_of_gate;
        let counts = plan.full_counts();
        let raw: Vec<f64> = match self {
            CostWeighting::Uniform => vec![1.0; gates.len()],
            CostWeighting::Flops => gates
                .iter()
                .map(|&g| plan.flops.marginal(g, &counts))
                .collect(),
            CostWeighting::Params => gates
                .iter()
                .map(|&g| plan.params.marginal(g, &counts))
                .collect(),
            CostWeighting::Latency => {
                let latency = latency.ok_or_else(|| SearchError::InvalidOption {
                    option: "--cost",
                    value: "latency".into(),
                    reason: "needs the board's latency: add --board BOARD (profiled on the fly) or --latency-table FILE".into(),
                })?;
                gates
                    .iter()
                    .map(|&g| latency.marginal(g, &counts))
                    .collect()
            }
        };
        let channels: f64 = gates.iter().map(|&g| counts[g]).sum();
        let weighted: f64 = gates.iter().zip(&raw).map(|(&g, c)| counts[g] * c).sum();
        Ok(if weighted > 0.0 {
            raw.iter().map(|c| c * channels / weighted).collect()
        } else {
            vec![1.0; gates.len()]
        })
    }
}

impl fmt::Display for CostWeighting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CostWeighting::Uniform => "uniform",
            CostWeighting::Flops => "flops",
            CostWeighting::Latency => "latency",
            CostWeighting::Params => "params",
        })
    }
}

impl FromStr for CostWeighting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uniform" => Ok(CostWeighting::Uniform),
            "flops" => Ok(CostWeighting::Flops),
            "latency" => Ok(CostWeighting::Latency),
            "params" => Ok(CostWeighting::Params),
            _ => Err(format!(
                "unknown cost {s:?}; choose one of {}",
                CostWeighting::NAMES.join(", ")
            )),
        }
    }
}

/// The expected multiply-accumulates under soft gates: every gated group counts
/// `sum_j sigmoid(delta * s_j)` channels, the others all of theirs.
pub fn expected_flops(plan: &NetPlan, gate_scores: &[Vec<f32>], delta: f64) -> f64 {
    let mut counts = plan.full_counts();
    for (gate, scores) in gate_scores.iter().enumerate() {
        let group = plan.groups.group_of_gate[gate];
        counts[group] = scores
            .iter()
            .map(|&s| 1.0 / (1.0 + (-(delta * s as f64)).exp()))
            .sum();
    }
    plan.flops.total(&counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnal_models::{GatePosition, Shape3, model_spec};

    #[test]
    fn flops_weights_favour_expensive_channels_and_average_one() {
        let spec = model_spec("vgg-small", Shape3::new(1, 28, 28), 10).unwrap();
        let plan = NetPlan::new(spec, GatePosition::AfterBn).unwrap();
        let w = CostWeighting::Flops.weights(&plan, None).unwrap();
        assert_eq!(w.len(), 5);
        // conv2 (28x28, between 32-channel layers) costs more per channel than conv5 (7x7).
        assert!(w[1] > w[4], "{w:?}");
        // The mean over channels, each gate's weight counted once per channel of its group.
        let channel_mean = |weights: &[f64]| {
            let channels = plan.full_counts();
            let gates = &plan.groups.group_of_gate;
            let n: f64 = gates.iter().map(|&g| channels[g]).sum();
            let weighted: f64 = gates
                .iter()
                .zip(weights)
                .map(|(&g, c)| channels[g] * c)
                .sum();
            weighted / n
        };
        assert!((channel_mean(&w) - 1.0).abs() < 1e-9, "{w:?}");
        assert_eq!(
            CostWeighting::Uniform.weights(&plan, None).unwrap(),
            vec![1.0; 5]
        );
        // In parameters the order flips: a channel of conv4 (14x14, read by the 128-channel
        // conv5) costs twice conv2's (28x28, read by the 64-channel conv3), in MACs half.
        let p = CostWeighting::Params.weights(&plan, None).unwrap();
        assert!(p[1] < p[3] && w[1] > w[3], "{p:?} {w:?}");
        assert!((channel_mean(&p) - 1.0).abs() < 1e-9, "{p:?}");
        for name in CostWeighting::NAMES {
            assert_eq!(&name.parse::<CostWeighting>().unwrap().to_string(), name);
        }
        let err = CostWeighting::Latency
            .weights(&plan, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--board"), "{err}");
    }

    #[test]
    fn expected_flops_spans_zero_gates_to_full() {
        let spec = model_spec("vgg-small", Shape3::new(1, 28, 28), 10).unwrap();
        let plan = NetPlan::new(spec, GatePosition::AfterBn).unwrap();
        let open: Vec<Vec<f32>> = plan
            .groups
            .group_of_gate
            .iter()
            .map(|&g| vec![1.0; plan.groups.groups[g].channels])
            .collect();
        let full = plan.total_flops() as f64;
        assert!((expected_flops(&plan, &open, 1e4) - full).abs() < 1.0);
        let half = expected_flops(
            &plan,
            &open.iter().map(|s| vec![0.0; s.len()]).collect::<Vec<_>>(),
            1.0,
        );
        assert!(half < full / 2.0 && half > full / 8.0);
    }
}
