//! Costs as plain polynomials in the channel counts of the groups.
//!
//! Every layer's multiply-accumulates (MACs) and parameters are a coefficient times the product
//! of the channel counts of the groups it reads and writes: a dense conv costs
//! `Ho * Wo * k * k * C_out * C_in`, a depthwise conv `Ho * Wo * k * k * C`, a linear layer
//! `H * W * C_in * F_out`. Summing such terms gives the cost of the parent network (full counts),
//! of any pruned network (kept counts), its expected cost under soft gates (expected counts),
//! and the marginal cost of one channel of a group (the derivative), all from one table.

use crate::groups::ChannelGroups;
use crate::spec::{NetSpec, Op, Shape3};

/// `coeff * prod(counts[g] for g in groups)`.
#[derive(Clone, Debug, PartialEq)]
pub struct CostTerm {
    /// The node that pays this cost.
    pub node: usize,
    /// The constant factor.
    pub coeff: f64,
    /// The groups whose channel counts multiply it (a group may appear twice).
    pub groups: Vec<usize>,
}

/// A cost as a sum of [`CostTerm`]s.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CostModel {
    /// The terms.
    pub terms: Vec<CostTerm>,
}

/// Which cost a [`CostModel`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostKind {
    /// Multiply-accumulates of one forward pass of one image (convs and linear layers).
    Flops,
    /// Weights and biases of the deployed network (batch norm folded into the convs).
    Params,
}

impl CostModel {
    /// The cost table of a network.
    pub fn new(kind: CostKind, spec: &NetSpec, shapes: &[Shape3], groups: &ChannelGroups) -> Self {
        let mut terms = Vec::new();
        let g = |v: usize| groups.value_group[v];
        for (index, node) in spec.nodes.iter().enumerate() {
            let out = shapes[index + 1];
            let input = node.inputs[0];
            let mut term = |coeff: f64, groups: Vec<usize>| {
                terms.push(CostTerm {
                    node: index,
                    coeff,
                    groups,
                })
            };
            match (&node.op, kind) {
                (
                    Op::Conv {
                        kernel, depthwise, ..
                    },
                    CostKind::Flops,
                ) => {
                    let window = (out.height * out.width * kernel * kernel) as f64;
                    if *depthwise {
                        term(window, vec![g(index + 1)]);
                    } else {
                        term(window, vec![g(index + 1), g(input)]);
                    }
                }
                (
                    Op::Conv {
                        kernel, depthwise, ..
                    },
                    CostKind::Params,
                ) => {
                    let taps = (kernel * kernel) as f64;
                    if *depthwise {
                        term(taps + 1.0, vec![g(index + 1)]);
                    } else {
                        term(taps, vec![g(index + 1), g(input)]);
                        term(1.0, vec![g(index + 1)]);
                    }
                }
                (Op::Linear { out_features, .. }, kind) => {
                    let x = shapes[input];
                    let spatial = (x.height * x.width) as f64;
                    term(spatial * *out_features as f64, vec![g(input)]);
                    if kind == CostKind::Params {
                        term(*out_features as f64, vec![]);
                    }
                }
                _ => {}
            }
        }
        Self { terms }
    }

    /// The cost with `counts[g]` channels in group `g`.
    pub fn total(&self, counts: &[f64]) -> f64 {
        self.terms.iter().map(|t| term_value(t, counts)).sum()
    }

    /// The cost each node pays, indexed by node.
    pub fn per_node(&self, nodes: usize, counts: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; nodes];
        for t in &self.terms {
            out[t.node] += term_value(t, counts);
        }
        out
    }

    /// How much the cost grows per channel of `group` at these counts (the partial
    /// derivative; exact for one more channel because every term is linear in each occurrence).
    pub fn marginal(&self, group: usize, counts: &[f64]) -> f64 {
        let mut sum = 0.0;
        for t in &self.terms {
            for (i, &tg) in t.groups.iter().enumerate() {
                if tg == group {
                    let others: f64 = t
                        .groups
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, &o)| counts[o])
                        .product();
                    sum += t.coeff * others;
                }
            }
        }
        sum
    }
}

fn term_value(t: &CostTerm, counts: &[f64]) -> f64 {
    t.coeff * t.groups.iter().map(|&g| counts[g]).product::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Activation, SpecBuilder};

    #[test]
    fn conv_and_linear_costs_match_hand_counts() {
        let mut b = SpecBuilder::new("t", Shape3::new(3, 8, 8), 5);
        let c1 = b.conv("c1", 0, 4, 3, 1, Activation::Relu);
        let c2 = b.conv("c2", c1, 6, 3, 2, Activation::Relu);
        b.push(
            "fc",
            Op::Linear {
                out_features: 5,
                activation: Activation::None,
            },
            vec![c2],
        );
        let spec = b.finish();
        let shapes = spec.value_shapes().unwrap();
        let groups = ChannelGroups::analyse(&spec, &shapes).unwrap();
        let counts: Vec<f64> = groups.groups.iter().map(|g| g.channels as f64).collect();
        let flops = CostModel::new(CostKind::Flops, &spec, &shapes, &groups);
        let c1_macs = 8 * 8 * 4 * 3 * 9;
        let c2_macs = 4 * 4 * 6 * 4 * 9;
        let fc_macs = 6 * 4 * 4 * 5;
        assert_eq!(flops.total(&counts), (c1_macs + c2_macs + fc_macs) as f64);
        let params = CostModel::new(CostKind::Params, &spec, &shapes, &groups);
        let p = (4 * 3 * 9 + 4) + (6 * 4 * 9 + 6) + (96 * 5 + 5);
        assert_eq!(params.total(&counts), p as f64);

        // One channel less in c1's group saves exactly its marginal cost.
        let g1 = groups.value_group[1];
        let mut fewer = counts.clone();
        fewer[g1] -= 1.0;
        let saved = flops.total(&counts) - flops.total(&fewer);
        assert_eq!(flops.marginal(g1, &counts), saved);
        assert_eq!(saved, (8 * 8 * 3 * 9 + 4 * 4 * 6 * 9) as f64);
    }
}
