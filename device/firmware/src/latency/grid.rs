//! Which channel counts to measure for each layer of a parent network.
//!
//! Measured costs (as `dnal profile` measures them on the QEMU boards) are linear in the
//! input channel count
//! and, for the blocked kernels (dense conv, linear: 4 output channels per register tile),
//! linear in the number of full output blocks plus what the leftover channels cost, about
//! twice a blocked channel each and not quite the same with or without full blocks before
//! them. So a few points per axis suffice if the output axis holds multiples of the block
//! and the counts below two blocks (the leftovers, without and with a full block).

use serde::{Deserialize, Serialize};

use super::LatencyError;
use super::table::{Grid, InRow, LayerStructure};
use crate::board::Int8Simd;
use dnal_export::{Arch, ArchSummary, Layer, LayerSummary, Op};
use dnal_kernels::f32::OUT_BLOCK;
use dnal_kernels::int8::ADD_TABLE_MIN_LEN;
use dnal_kernels::{Conv2dParams, Shape3};

/// How densely to measure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridOptions {
    /// Points on an input-channel axis, spread from 1 to the parent's count (>= 2).
    pub in_points: usize,
    /// Multiples of the register block on an output-channel axis, spread from one block to
    /// the parent's count (>= 2); the counts below one block and the parent's own count are
    /// measured too.
    pub out_points: usize,
    /// Points on the axis of a layer that keeps its channel count (pools, depthwise, add),
    /// spread from 1 to the parent's count (>= 2).
    pub channel_points: usize,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            in_points: 3,
            out_points: 3,
            channel_points: 3,
        }
    }
}

impl GridOptions {
    pub(crate) fn check(&self) -> Result<(), LatencyError> {
        for (name, v) in [
            ("in_points", self.in_points),
            ("out_points", self.out_points),
            ("channel_points", self.channel_points),
        ] {
            if v < 2 {
                return Err(LatencyError::Options(format!(
                    "grid {name} is {v}; at least 2 points are needed to interpolate"
                )));
            }
        }
        Ok(())
    }
}

/// The grid of one layer before measurement: its structure and the counts to measure.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LayerPlan {
    pub index: usize,
    pub name: String,
    pub structure: LayerStructure,
    pub axes: Axes,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Axes {
    InOut {
        in_channels: Vec<usize>,
        out_channels: Vec<usize>,
        out_block: usize,
        in_row: Option<InRow>,
    },
    Channels(Vec<usize>),
}

impl Axes {
    /// Every `(in, out)` channel pair to measure, row by row.
    pub fn points(&self) -> Vec<(usize, usize)> {
        match self {
            Axes::InOut {
                in_channels,
                out_channels,
                ..
            } => in_channels
                .iter()
                .flat_map(|&i| out_channels.iter().map(move |&o| (i, o)))
                .collect(),
            Axes::Channels(c) => c.iter().map(|&c| (c, c)).collect(),
        }
    }

    /// The grid with `costs` (one per point, in the order of [`Axes::points`]).
    pub fn with_costs(&self, costs: &[f64]) -> Grid {
        match self {
            Axes::InOut {
                in_channels,
                out_channels,
                out_block,
                in_row,
            } => Grid::InOut {
                in_channels: in_channels.clone(),
                out_channels: out_channels.clone(),
                out_block: *out_block,
                in_row: *in_row,
                cost: costs
                    .chunks(out_channels.len())
                    .map(|row| row.to_vec())
                    .collect(),
            },
            Axes::Channels(c) => Grid::Channels {
                channels: c.clone(),
                cost: costs.to_vec(),
            },
        }
    }
}

/// The grid of every layer of a validated parent network. For int8 firmware with SIMD
/// kernels (`simd`), a dense conv's input axis also holds both sides of every count where
/// the kernel changes ([`Int8Simd::dense_kernel`]): the cost per MAC jumps there (the
/// portable kernel takes several times the SIMD one's instructions per MAC, blocks of pixel
/// pairs fewer), and interpolating across a jump would misjudge every count beside it.
pub(crate) fn plan_layers(
    arch: &Arch,
    summary: &ArchSummary,
    options: &GridOptions,
    simd: Int8Simd,
) -> Vec<LayerPlan> {
    let fixed = fixed_values(arch);
    arch.layers
        .iter()
        .zip(&summary.layers)
        .enumerate()
        .map(|(index, (layer, info))| {
            let in_fixed = layer.inputs.iter().any(|&v| fixed[v]);
            let out_fixed = fixed[index + 1];
            let input = info.input_shapes[0];
            let (c_in, c_out) = (input.channels, info.output.channels);
            let axes = match &layer.op {
                Op::Conv2d(c) if !c.is_depthwise() => {
                    let mut axes = in_out(c_in, c_out, in_fixed, out_fixed, options);
                    if let (
                        false,
                        Axes::InOut {
                            in_channels,
                            in_row,
                            ..
                        },
                    ) = (in_fixed, &mut axes)
                    {
                        let kernel = |channels: usize| {
                            let shape = Shape3::new(channels, input.height, input.width);
                            Conv2dParams::new(
                                shape,
                                c_out,
                                c.kernel,
                                c.stride,
                                c.padding,
                                c.activation,
                            )
                            .map_or(0, |p| simd.dense_kernel(&p))
                        };
                        // A SIMD kernel that pads each output's row of inputs costs by the
                        // padded length, where it does so at every count: the points go where
                        // rows are whole, so that each measures a full row.
                        let kernels: Vec<u8> = (1..=c_in).map(kernel).collect();
                        *in_row = simd
                            .row_quantum(kernels[0])
                            .filter(|&q| kernels.iter().all(|&k| simd.row_quantum(k) == Some(q)))
                            .map(|quantum| InRow {
                                taps: c.kernel[0] * c.kernel[1],
                                quantum,
                            });
                        if let Some(row) = in_row {
                            let whole = row.whole_rows();
                            for n in in_channels.iter_mut().filter(|n| **n > 1) {
                                *n = (n.div_ceil(whole) * whole).min(c_in);
                            }
                        }
                        // `kernels[n - 1]` is `kernel(n)`: a change between n and n + 1.
                        let jumps = (1..c_in).filter(|&n| kernels[n - 1] != kernels[n]);
                        in_channels.extend(jumps.flat_map(|n| [n, n + 1]));
                        in_channels.sort_unstable();
                        in_channels.dedup();
                    }
                    axes
                }
                Op::Linear(_) => in_out(c_in, c_out, in_fixed, out_fixed, options),
                _ => Axes::Channels(if in_fixed || out_fixed {
                    vec![c_in]
                } else {
                    let mut channels = spread(c_in, options.channel_points);
                    channels.extend(channel_jumps(layer, info, simd));
                    channels.retain(|&n| n <= c_in);
                    channels.sort_unstable();
                    channels.dedup();
                    channels
                }),
            };
            LayerPlan {
                index,
                name: layer.name.clone(),
                structure: LayerStructure::of(layer, info),
                axes,
            }
        })
        .collect()
}

/// Both sides of every count where a layer that keeps its channel count changes kernels,
/// so that no interpolation runs across the change: a depthwise conv of one channel is
/// exported as a dense conv of one input and one output (1 and 2); an int8 add on a
/// Cortex-M looks its inputs up in tables from [`ADD_TABLE_MIN_LEN`] outputs on, which
/// costs a fixed 512 lookups' building and less per output.
fn channel_jumps(layer: &Layer, info: &LayerSummary, simd: Int8Simd) -> Vec<usize> {
    match &layer.op {
        Op::Conv2d(c) if c.is_depthwise() => vec![1, 2],
        Op::Add(_) if matches!(simd, Int8Simd::Dsp { .. }) => {
            let pixels = (info.output.height * info.output.width).max(1);
            let first = ADD_TABLE_MIN_LEN.div_ceil(pixels);
            if first >= 2 {
                vec![first - 1, first]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

fn in_out(c_in: usize, c_out: usize, in_fixed: bool, out_fixed: bool, o: &GridOptions) -> Axes {
    Axes::InOut {
        in_channels: if in_fixed {
            vec![c_in]
        } else {
            spread(c_in, o.in_points)
        },
        out_channels: if out_fixed {
            vec![c_out]
        } else {
            blocked_points(c_out, o.out_points, OUT_BLOCK)
        },
        out_block: OUT_BLOCK,
        in_row: None,
    }
}

/// `n` counts spread evenly from 1 to `max` (fewer when `max` is small).
pub(crate) fn spread(max: usize, n: usize) -> Vec<usize> {
    if max <= 1 || n < 2 {
        return vec![max.max(1)];
    }
    let mut v: Vec<usize> = (0..n)
        .map(|k| 1 + ((max - 1) as f64 * k as f64 / (n - 1) as f64).round() as usize)
        .collect();
    v.dedup();
    v
}

/// The counts below one block and just above it (the leftover channels' cost without and
/// with full blocks before them), `n` multiples of the block from one block to `max`, and
/// `max` itself.
pub(crate) fn blocked_points(max: usize, n: usize, block: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (1..(2 * block).min(max + 1)).collect();
    let blocks = max / block;
    if blocks >= 1 {
        v.extend(spread(blocks, n).into_iter().map(|b| b * block));
    }
    v.push(max);
    v.sort_unstable();
    v.dedup();
    v
}

/// For each value (0 = the image, `i + 1` = layer `i`'s output): true when its channel
/// count cannot change in a pruned network. The image's and the logits' counts are fixed,
/// and so is every value tied to them by a layer that keeps its channel count (pools,
/// depthwise conv, add: their inputs and output share one count).
pub(crate) fn fixed_values(arch: &Arch) -> Vec<bool> {
    let n = arch.layers.len() + 1;
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut v: usize) -> usize {
        while parent[v] != v {
            parent[v] = parent[parent[v]];
            v = parent[v];
        }
        v
    }
    for (i, layer) in arch.layers.iter().enumerate() {
        let keeps = match &layer.op {
            Op::Conv2d(c) => c.is_depthwise(),
            Op::Linear(_) => false,
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::GlobalAvgPool | Op::Add(_) => true,
        };
        if keeps {
            for &v in &layer.inputs {
                let (a, b) = (root(&mut parent, v), root(&mut parent, i + 1));
                parent[a] = b;
            }
        }
    }
    let image = root(&mut parent, 0);
    let logits = root(&mut parent, n - 1);
    (0..n)
        .map(|v| {
            let r = root(&mut parent, v);
            r == image || r == logits
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;

    #[test]
    fn points_cover_one_to_the_parent_and_the_blocks() {
        assert_eq!(spread(32, 3), vec![1, 17, 32]);
        assert_eq!(spread(1, 3), vec![1]);
        assert_eq!(spread(2, 3), vec![1, 2]);
        assert_eq!(blocked_points(32, 3, 4), vec![1, 2, 3, 4, 5, 6, 7, 20, 32]);
        assert_eq!(
            blocked_points(30, 3, 4),
            vec![1, 2, 3, 4, 5, 6, 7, 16, 28, 30]
        );
        assert_eq!(blocked_points(3, 3, 4), vec![1, 2, 3]);
        assert_eq!(blocked_points(5, 3, 4), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            blocked_points(128, 4, 4),
            vec![1, 2, 3, 4, 5, 6, 7, 44, 88, 128]
        );
    }

    #[test]
    fn int8_dsp_grids_hold_both_sides_of_the_smlad_kernels_limit() {
        let mut arch = synth::vgg_small_arch();
        let summary = arch.complete().unwrap();
        let in_axis = |plans: &[LayerPlan], name: &str| match &plans
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .axes
        {
            Axes::InOut { in_channels, .. } => in_channels.clone(),
            a => panic!("{a:?}"),
        };
        let f32_plans = plan_layers(&arch, &summary, &GridOptions::default(), Int8Simd::None);
        let int8_plans = plan_layers(
            &arch,
            &summary,
            &GridOptions::default(),
            Int8Simd::Dsp { winograd: false },
        );
        // conv4 reads 64 channels: 576 taps, over the 512 of the SMLAD kernel; 56 channels
        // (504 taps) are the most that fit.
        assert_eq!(in_axis(&f32_plans, "conv4"), vec![1, 33, 64]);
        // And up to 42 channels (378 taps, 380 codes) its rows of 7 pixel pairs go in
        // blocks of at least 2 (3 fit beside their widened weights in 6 KiB), from 43 (388
        // codes, 2 fit: blocks of 1 or 2) pair by pair.
        assert_eq!(
            in_axis(&int8_plans, "conv4"),
            vec![1, 33, 42, 43, 56, 57, 64]
        );
        // conv2's 32 channels fit whole, and its rows of 14 pairs go in blocks at every
        // count: no extra points, but the middle one where a row of 9 codes a channel needs
        // no padding to 4 (20 channels, not 17); the f32 kernels pad nothing.
        assert_eq!(in_axis(&f32_plans, "conv2"), vec![1, 17, 32]);
        assert_eq!(in_axis(&int8_plans, "conv2"), vec![1, 20, 32]);
        let row = |plans: &[LayerPlan], name: &str| match &plans
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .axes
        {
            Axes::InOut { in_row, .. } => *in_row,
            a => panic!("{a:?}"),
        };
        assert_eq!(row(&f32_plans, "conv2"), None);
        assert_eq!(
            row(&int8_plans, "conv2"),
            Some(InRow {
                taps: 9,
                quantum: 4
            })
        );
        // conv4 runs the portable kernel from 57 channels, which pads nothing.
        assert_eq!(row(&int8_plans, "conv4"), None);
    }

    #[test]
    fn image_and_logit_channels_are_fixed_through_pools_and_adds() {
        let arch = synth::tiny_cnn_arch("t");
        // Values: 0 image, 1 conv1, 2 dw, 3 pw, 4 res, 5 pool, 6 conv2, 7 avg, 8 gap, 9 fc.
        let fixed = fixed_values(&arch);
        assert_eq!(
            fixed,
            vec![
                true, false, false, false, false, false, false, false, false, true
            ]
        );
        let mut arch = arch;
        arch.complete().unwrap();
        let summary = arch.summary().unwrap();
        let plans = plan_layers(&arch, &summary, &GridOptions::default(), Int8Simd::None);
        assert_eq!(
            plans[0].axes,
            Axes::InOut {
                in_channels: vec![3],
                out_channels: vec![1, 2, 3, 4, 5, 6, 7, 8],
                out_block: 4,
                in_row: None,
            }
        );
        // The depthwise layer: one channel is exported as a dense conv, so 2 is measured too.
        assert_eq!(plans[1].axes, Axes::Channels(vec![1, 2, 5, 8]));
        // The add (12x12 outputs): the int8 Cortex-M add looks codes up in tables from 512
        // outputs (4 channels), so 3 and 4 are measured too; elsewhere not.
        assert_eq!(plans[3].axes, Axes::Channels(vec![1, 5, 8]));
        let dsp = plan_layers(
            &arch,
            &summary,
            &GridOptions::default(),
            Int8Simd::Dsp { winograd: false },
        );
        assert_eq!(dsp[3].axes, Axes::Channels(vec![1, 3, 4, 5, 8]));
        assert_eq!(
            plans[8].axes,
            Axes::InOut {
                in_channels: vec![1, 4, 6],
                out_channels: vec![10],
                out_block: 4,
                in_row: None,
            }
        );
        assert_eq!(plans[8].axes.points().len(), 3);
    }
}
