//! Activation memory planning: where every intermediate value lives in one static arena.
//!
//! Value `v` (the output of layer `v - 1`) is live from the layer that writes it to the last
//! layer that reads it. The image (value 0) stays in the caller's input array and the logits
//! (the last value) are written straight into the caller's output array, so neither takes
//! arena space. Values are placed greedily, largest first, at the lowest offset that does
//! not overlap a placed value whose lifetime intersects; the lower bound on any placement is
//! the largest total size of values live during one layer.

use serde::{Deserialize, Serialize};

use dnal_export::ArchSummary;
use dnal_kernels::arena::Span;

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
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// One place per value (`layers + 1` values).
    pub places: Vec<Place>,
    /// Layers `[first, last]` during which each value is live.
    pub lifetimes: Vec<(usize, usize)>,
    /// Per layer, the scratch buffer it uses while it runs (`None`: none).
    pub scratch: Vec<Option<Span>>,
    /// Arena length in f32 values.
    pub arena_len: usize,
    /// The largest total length of arena buffers live during one layer: no placement can use
    /// less.
    pub lower_bound: usize,
}

/// Plans the arena for a validated architecture whose layers need no scratch space.
pub fn plan_memory(summary: &ArchSummary) -> MemoryPlan {
    plan_memory_with_scratch(summary, &vec![0; summary.layers.len()])
}

/// Plans the arena; `scratch[i]` f32 are needed by layer `i` while it runs (0: none).
pub fn plan_memory_with_scratch(summary: &ArchSummary, scratch: &[usize]) -> MemoryPlan {
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
    // Buffers to place: the values except the input and the output, then the scratch areas.
    let mut buffers: Vec<(usize, (usize, usize))> =
        (1..n_values - 1).map(|v| (lens[v], lifetimes[v])).collect();
    let scratch_index: Vec<Option<usize>> = (0..n_layers)
        .map(|i| {
            let len = scratch.get(i).copied().unwrap_or(0);
            (len > 0).then(|| {
                buffers.push((len, (i, i)));
                buffers.len() - 1
            })
        })
        .collect();

    let lower_bound = (0..n_layers)
        .map(|t| {
            buffers
                .iter()
                .filter(|(_, (first, last))| *first <= t && t <= *last)
                .map(|(len, _)| len)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);

    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by_key(|&b| (std::cmp::Reverse(buffers[b].0), b));
    let mut offsets: Vec<Option<usize>> = vec![None; buffers.len()];
    for &b in &order {
        let (len, (first, last)) = buffers[b];
        let mut busy: Vec<(usize, usize)> = (0..buffers.len())
            .filter(|&u| buffers[u].1.0 <= last && first <= buffers[u].1.1)
            .filter_map(|u| offsets[u].map(|o| (o, o + buffers[u].0)))
            .collect();
        busy.sort();
        let mut candidate = 0;
        for (start, end) in busy {
            if candidate + len <= start {
                break;
            }
            candidate = candidate.max(end);
        }
        offsets[b] = Some(candidate);
    }
    let span = |b: usize| Span::new(offsets[b].expect("every buffer is placed"), buffers[b].0);
    let places: Vec<Place> = (0..n_values)
        .map(|v| {
            if v == 0 {
                Place::Input
            } else if v == n_values - 1 {
                Place::Output
            } else {
                let s = span(v - 1);
                Place::Arena {
                    offset: s.offset,
                    len: s.len,
                }
            }
        })
        .collect();
    let arena_len = (0..buffers.len())
        .map(|b| offsets[b].unwrap_or(0) + buffers[b].0)
        .max()
        .unwrap_or(0);
    MemoryPlan {
        places,
        lifetimes,
        scratch: scratch_index.iter().map(|b| b.map(span)).collect(),
        arena_len,
        lower_bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnal_export::LayerSummary;
    use dnal_kernels::Shape3;

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
    fn scratch_is_live_only_during_its_layer() {
        // v1 = conv(v0) 100; v2 = dw(v1) 100 with 120 scratch; v3 = linear(v2)
        let summary = ArchSummary {
            input: Shape3::new(4, 1, 1),
            layers: vec![layer(vec![0], 100), layer(vec![1], 100), layer(vec![2], 2)],
            macs: 0,
            params: 0,
        };
        let plan = plan_memory_with_scratch(&summary, &[0, 120, 0]);
        check_no_overlap(&summary, &plan);
        let s = plan.scratch[1].unwrap();
        assert_eq!(s.len, 120);
        assert!(plan.scratch[0].is_none() && plan.scratch[2].is_none());
        for v in [1, 2] {
            let p = plan.places[v].span().unwrap();
            assert!(p.offset + p.len <= s.offset || s.offset + s.len <= p.offset);
        }
        assert_eq!(plan.lower_bound, 320);
        assert_eq!(plan.arena_len, 320);
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
