//! Activation memory planning: where every intermediate value lives in one static arena.
//!
//! Value `v` (the output of layer `v - 1`) is live from the layer that writes it to the last
//! layer that reads it. The image (value 0) stays in the caller's input array and the logits
//! (the last value) are written straight into the caller's output array, so neither takes
//! arena space. Values are placed greedily, largest first, at the lowest offset that does
//! not overlap a placed value whose lifetime intersects; the lower bound on any placement is
//! the largest total size of values live during one layer.

use serde::{Deserialize, Serialize};

use crate::arena::Span;
use crate::export::ArchSummary;

/// Where one value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Place {
    /// The caller's input array (value 0).
    Input,
    /// The caller's output array (the last value).
    Output,
    /// `len` f32 at `offset` in the arena.
    Arena { offset: usize, len: usize },
}

impl Place {
    pub fn span(&self) -> Option<Span> {
        match *self {
            Place::Arena { offset, len } => Some(Span::new(offset, len)),
            _ => None,
        }
    }
}

/// The arena layout of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// One place per value (`layers + 1` values).
    pub places: Vec<Place>,
    /// Layers `[first, last]` during which each value is live.
    pub lifetimes: Vec<(usize, usize)>,
    /// Arena length in f32 values.
    pub arena_len: usize,
    /// The largest total length of arena values live during one layer: no placement can use
    /// less.
    pub lower_bound: usize,
}

/// Plans the arena for a validated architecture.
pub fn plan_memory(summary: &ArchSummary) -> MemoryPlan {
    let n_layers = summary.layers.len();
    let n_values = n_layers + 1;
    let mut lens = vec![summary.input.len()];
    lens.extend(summary.layers.iter().map(|l| l.output.len()));
    let mut lifetimes: Vec<(usize, usize)> = (0..n_values)
        .map(|v| {
            let first = v.saturating_sub(1);
            (first, first)
        })
        .collect();
    for (i, layer) in summary.layers.iter().enumerate() {
        for &v in &layer.inputs {
            lifetimes[v].1 = lifetimes[v].1.max(i);
        }
    }
    let in_arena = |v: usize| v != 0 && v != n_values - 1;

    let lower_bound = (0..n_layers)
        .map(|t| {
            (0..n_values)
                .filter(|&v| in_arena(v) && lifetimes[v].0 <= t && t <= lifetimes[v].1)
                .map(|v| lens[v])
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);

    let mut order: Vec<usize> = (0..n_values).filter(|&v| in_arena(v)).collect();
    order.sort_by_key(|&v| (std::cmp::Reverse(lens[v]), v));
    let mut offsets: Vec<Option<usize>> = vec![None; n_values];
    for &v in &order {
        let overlaps =
            |u: usize| lifetimes[u].0 <= lifetimes[v].1 && lifetimes[v].0 <= lifetimes[u].1;
        let mut busy: Vec<(usize, usize)> = (0..n_values)
            .filter(|&u| overlaps(u))
            .filter_map(|u| offsets[u].map(|o| (o, o + lens[u])))
            .collect();
        busy.sort();
        let mut candidate = 0;
        for (start, end) in busy {
            if candidate + lens[v] <= start {
                break;
            }
            candidate = candidate.max(end);
        }
        offsets[v] = Some(candidate);
    }
    let places: Vec<Place> = (0..n_values)
        .map(|v| match offsets[v] {
            Some(offset) => Place::Arena {
                offset,
                len: lens[v],
            },
            None if v == 0 => Place::Input,
            None => Place::Output,
        })
        .collect();
    let arena_len = (0..n_values)
        .filter_map(|v| offsets[v].map(|o| o + lens[v]))
        .max()
        .unwrap_or(0);
    MemoryPlan {
        places,
        lifetimes,
        arena_len,
        lower_bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::LayerSummary;
    use crate::kernels::Shape3;

    fn layer(inputs: Vec<usize>, len: usize) -> LayerSummary {
        LayerSummary {
            name: String::new(),
            op: String::new(),
            inputs,
            input_shapes: vec![],
            output: Shape3::new(len, 1, 1),
            macs: 0,
            params: 0,
            tensor_shapes: None,
        }
    }

    fn check_no_overlap(summary: &ArchSummary, plan: &MemoryPlan) {
        for a in 0..plan.places.len() {
            for b in a + 1..plan.places.len() {
                let (Some(sa), Some(sb)) = (plan.places[a].span(), plan.places[b].span()) else {
                    continue;
                };
                let (la, lb) = (plan.lifetimes[a], plan.lifetimes[b]);
                let live_together = la.0 <= lb.1 && lb.0 <= la.1;
                let overlap = sa.offset < sb.offset + sb.len && sb.offset < sa.offset + sa.len;
                assert!(!(live_together && overlap), "values {a} and {b} collide");
            }
        }
        assert!(plan.arena_len >= plan.lower_bound);
        assert_eq!(plan.places.len(), summary.layers.len() + 1);
    }

    #[test]
    fn chain_reuses_memory_and_meets_the_bound() {
        // input -> 100 -> 50 -> 100 -> 10 (output)
        let summary = ArchSummary {
            input: Shape3::new(10, 1, 1),
            layers: vec![
                layer(vec![0], 100),
                layer(vec![1], 50),
                layer(vec![2], 100),
                layer(vec![3], 10),
            ],
            macs: 0,
            params: 0,
        };
        let plan = plan_memory(&summary);
        check_no_overlap(&summary, &plan);
        assert_eq!(plan.places[0], Place::Input);
        assert_eq!(plan.places[4], Place::Output);
        assert_eq!(plan.lower_bound, 150);
        assert_eq!(plan.arena_len, 150);
    }

    #[test]
    fn residual_keeps_the_skip_value_alive() {
        // v1 = conv(v0); v2 = conv(v1); v3 = add(v1, v2); v4 = linear(v3)
        let summary = ArchSummary {
            input: Shape3::new(4, 1, 1),
            layers: vec![
                layer(vec![0], 64),
                layer(vec![1], 64),
                layer(vec![1, 2], 64),
                layer(vec![3], 2),
            ],
            macs: 0,
            params: 0,
        };
        let plan = plan_memory(&summary);
        check_no_overlap(&summary, &plan);
        assert_eq!(plan.lifetimes[1], (0, 2));
        assert_eq!(plan.lower_bound, 192);
        assert_eq!(plan.arena_len, 192);
    }

    #[test]
    fn single_layer_needs_no_arena() {
        let summary = ArchSummary {
            input: Shape3::new(4, 1, 1),
            layers: vec![layer(vec![0], 2)],
            macs: 0,
            params: 0,
        };
        let plan = plan_memory(&summary);
        assert_eq!(plan.arena_len, 0);
        assert_eq!(plan.lower_bound, 0);
    }
}
