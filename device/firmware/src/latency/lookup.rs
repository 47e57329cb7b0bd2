//! Reading costs out of a table: interpolation between the measured channel counts, whole
//! architectures, marginal costs and milliseconds.

use serde::{Deserialize, Serialize};

use super::table::{Grid, InRow, LatencyTable, LayerLatency, LayerStructure};
use super::{LatencyError, TableRef};
use dnal_export::Arch;

/// One layer's cost at some channel counts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lookup {
    /// In the table's unit.
    pub cost: f64,
    /// True when a channel count lies outside the measured range (the end segments of the
    /// grid were continued).
    pub extrapolated: bool,
}

/// The predicted cost of a whole architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// `overhead` plus the layers, in the table's unit.
    pub total: f64,
    /// The table's per-inference overhead (included in `total`).
    pub overhead: f64,
    /// `total` in milliseconds at the table's clock.
    pub ms: f64,
    /// The table's unit ("instructions" or "cycles").
    pub unit: String,
    /// One entry per layer of the architecture, in order.
    pub per_layer: Vec<LayerPrediction>,
    /// True when any layer was extrapolated.
    pub extrapolated: bool,
}

/// One layer's share of a [`Prediction`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerPrediction {
    pub name: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub cost: f64,
    pub extrapolated: bool,
}

/// What one more channel costs at some channel counts (units per channel): the slope of the
/// interpolant over the segment that ends at the given count (the saving of removing one
/// channel), or the first segment at the lowest count.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Marginal {
    /// One more input channel. Where a SIMD kernel pads each output's row of inputs
    /// ([`InRow`]) the cost follows the padded row's length, a staircase in the channels; this
    /// is its mean slope over the segment, taken along the channels: the grid's points lie where
    /// rows are whole, so the segment's cost difference over its channels is what each
    /// channel adds on average. A gate needs that push: the staircase's own slope is uneven
    /// (for a 1x1 conv under `SMLAD`, 0 on three channels of four and a whole row's cost on
    /// the fourth).
    pub per_in_channel: f64,
    /// One more output channel, averaged over a register block: the slope of the cost through
    /// the multiples of `out_block`, so that it reflects the trend rather than the saw-tooth
    /// of partly filled blocks. Layers that keep their channel count (pools, depthwise, add)
    /// put their whole cost per channel in `per_in_channel` and 0 here, so that a channel
    /// summed over the layers that read and write it is counted once.
    pub per_out_channel: f64,
}

impl LatencyTable {
    /// The cost of layer `layer` with `in_channels` input and `out_channels` output
    /// channels: exact at measured counts, interpolated between them (bilinear over the two
    /// counts; on a blocked output axis, full blocks between multiples of the block plus the
    /// leftover channels at their own measured cost), linearly extrapolated beyond them
    /// (`extrapolated = true`). Layers that keep their channel count (pools, depthwise,
    /// add) need `in_channels == out_channels`.
    pub fn lookup(
        &self,
        layer: &str,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Lookup, LatencyError> {
        let entry = self.entry(layer)?;
        self.lookup_entry(entry, in_channels, out_channels)
    }

    /// The cost of one inference of `arch` (a pruned network of this table's model): the
    /// table's overhead plus every layer at its channel counts. Every layer must be in the
    /// table with the same structure (op, kernel, stride, padding, depthwise, activation,
    /// input size), else the error names the layer and what differs.
    pub fn predict(&self, arch: &Arch) -> Result<Prediction, LatencyError> {
        self.check_model(arch)?;
        let summary = arch.summary()?;
        let mut per_layer = Vec::with_capacity(arch.layers.len());
        let mut total = self.overhead;
        for (layer, info) in arch.layers.iter().zip(&summary.layers) {
            let entry = self.entry(&layer.name)?;
            let mut structure = LayerStructure::of(layer, info);
            let (in_channels, out_channels) = (info.input_shapes[0].channels, info.output.channels);
            // A depthwise layer pruned to one channel is exported with one group, as a dense
            // conv of one input and one output channel: the same computation, so its costs
            // are the depthwise layer's.
            if entry.structure.depthwise == Some(true)
                && structure.depthwise == Some(false)
                && (in_channels, out_channels) == (1, 1)
            {
                structure.depthwise = Some(true);
            }
            let differences = entry.structure.differences(&structure);
            if !differences.is_empty() {
                return Err(LatencyError::StructureMismatch {
                    table: self.table_ref(),
                    layer: layer.name.clone(),
                    differences: differences.join("; "),
                });
            }
            let found = self.lookup_entry(entry, in_channels, out_channels)?;
            total += found.cost;
            per_layer.push(LayerPrediction {
                name: layer.name.clone(),
                in_channels,
                out_channels,
                cost: found.cost,
                extrapolated: found.extrapolated,
            });
        }
        Ok(Prediction {
            total,
            overhead: self.overhead,
            ms: self.to_ms(total),
            unit: self.unit.clone(),
            extrapolated: per_layer.iter().any(|l| l.extrapolated),
            per_layer,
        })
    }

    /// The marginal cost of one channel of `layer` at the given counts (see [`Marginal`]).
    pub fn marginal(
        &self,
        layer: &str,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Marginal, LatencyError> {
        let entry = self.entry(layer)?;
        // Validates the counts (fixed axes, zero channels) with the lookup's errors.
        self.lookup_entry(entry, in_channels, out_channels)?;
        Ok(match &entry.grid {
            Grid::InOut {
                in_channels: ins,
                out_channels: outs,
                out_block,
                cost,
                ..
            } => {
                let per_in_channel = if ins.len() < 2 {
                    0.0
                } else {
                    let (k0, k1) = segment(ins, in_channels);
                    let c0 =
                        out_axis(outs, &cost[k0], *out_block, out_channels).map_or(0.0, |v| v.0);
                    let c1 =
                        out_axis(outs, &cost[k1], *out_block, out_channels).map_or(0.0, |v| v.0);
                    (c1 - c0) / (ins[k1] - ins[k0]) as f64
                };
                let per_out_channel = if outs.len() < 2 {
                    0.0
                } else {
                    // The in-axis interpolation of the rows' trend slopes.
                    let slope = |row: &[f64]| trend_slope(outs, row, *out_block, out_channels);
                    if ins.len() < 2 {
                        slope(&cost[0])
                    } else {
                        let (k0, k1) = segment(ins, in_channels);
                        let t = (in_channels as f64 - ins[k0] as f64)
                            / (ins[k1] as f64 - ins[k0] as f64);
                        let (s0, s1) = (slope(&cost[k0]), slope(&cost[k1]));
                        s0 + t * (s1 - s0)
                    }
                };
                Marginal {
                    per_in_channel,
                    per_out_channel,
                }
            }
            Grid::Channels { channels, cost } => {
                let per_in_channel = if channels.len() < 2 {
                    0.0
                } else {
                    let (k0, k1) = segment(channels, in_channels);
                    (cost[k1] - cost[k0]) / (channels[k1] - channels[k0]) as f64
                };
                Marginal {
                    per_in_channel,
                    per_out_channel: 0.0,
                }
            }
        })
    }

    /// Milliseconds of `units` at the table's clock: `units * cycles_per_unit / hz * 1000`.
    pub fn to_ms(&self, units: f64) -> f64 {
        units * self.clock.cycles_per_unit / self.clock.hz * 1e3
    }

    /// Checks that `arch` is this table's model with the same input.
    fn check_model(&self, arch: &Arch) -> Result<(), LatencyError> {
        if arch.name != self.model {
            return Err(LatencyError::ModelMismatch {
                table: self.table_ref(),
                model: arch.name.clone(),
            });
        }
        if arch.input != self.input {
            return Err(LatencyError::InputMismatch {
                table: self.table_ref(),
                table_input: self.input,
                arch_input: arch.input,
            });
        }
        Ok(())
    }

    fn entry(&self, layer: &str) -> Result<&LayerLatency, LatencyError> {
        self.layer(layer).ok_or_else(|| LatencyError::NotCovered {
            table: self.table_ref(),
            layer: layer.to_string(),
        })
    }

    /// The table in errors: its file ("the latency table" when not loaded from one), model
    /// and board.
    fn table_ref(&self) -> Box<TableRef> {
        Box::new(TableRef {
            table: match self.origin() {
                Some(p) => p.display().to_string(),
                None => "the latency table".to_string(),
            },
            model: self.model.clone(),
            board: self.board.clone(),
        })
    }

    fn lookup_entry(
        &self,
        entry: &LayerLatency,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Lookup, LatencyError> {
        if in_channels == 0 || out_channels == 0 {
            return Err(LatencyError::ZeroChannels {
                layer: entry.name.clone(),
                in_channels,
                out_channels,
            });
        }
        let fixed =
            |axis: &'static str, profiled: usize, requested: usize| LatencyError::FixedChannels {
                table: self.table_ref(),
                layer: entry.name.clone(),
                axis,
                profiled,
                requested,
            };
        match &entry.grid {
            Grid::InOut {
                in_channels: ins,
                out_channels: outs,
                out_block,
                in_row,
                cost,
            } => {
                if outs.len() == 1 && outs[0] != out_channels {
                    return Err(fixed("output", outs[0], out_channels));
                }
                if ins.len() == 1 {
                    if ins[0] != in_channels {
                        return Err(fixed("input", ins[0], in_channels));
                    }
                    let (cost, extrapolated) =
                        out_axis(outs, &cost[0], *out_block, out_channels)
                            .ok_or_else(|| fixed("output", outs[0], out_channels))?;
                    return Ok(Lookup {
                        cost: cost.max(0.0),
                        extrapolated,
                    });
                }
                let (k0, k1, t) = in_axis(ins, *in_row, in_channels);
                let row = |k: usize| {
                    out_axis(outs, &cost[k], *out_block, out_channels)
                        .ok_or_else(|| fixed("output", outs[0], out_channels))
                };
                let (c0, e0) = row(k0)?;
                let (c1, e1) = row(k1)?;
                let outside = in_channels < ins[0] || in_channels > *ins.last().unwrap_or(&0);
                Ok(Lookup {
                    // Extrapolating downwards could in principle dip below zero; no layer
                    // costs less than nothing.
                    cost: (c0 + t * (c1 - c0)).max(0.0),
                    extrapolated: e0 || e1 || outside,
                })
            }
            Grid::Channels { channels, cost } => {
                if in_channels != out_channels {
                    return Err(LatencyError::ChannelsDiffer {
                        layer: entry.name.clone(),
                        in_channels,
                        out_channels,
                    });
                }
                if channels.len() == 1 && channels[0] != in_channels {
                    return Err(fixed("input", channels[0], in_channels));
                }
                let xs: Vec<f64> = channels.iter().map(|&c| c as f64).collect();
                let (cost, extrapolated) = piecewise(&xs, cost, in_channels as f64)
                    .ok_or_else(|| fixed("input", channels[0], in_channels))?;
                Ok(Lookup {
                    cost: cost.max(0.0),
                    extrapolated,
                })
            }
        }
    }
}

/// The two grid points whose segment holds `x`: `(k - 1, k)` with `xs[k - 1] < x <= xs[k]`,
/// the first segment at or below the first point, the last one beyond the last point.
/// `xs` has at least two points.
fn segment(xs: &[usize], x: usize) -> (usize, usize) {
    let k = xs
        .iter()
        .position(|&v| v >= x)
        .unwrap_or(xs.len() - 1)
        .max(1);
    (k - 1, k)
}

/// Where `in_channels` lies on an input axis: the segment `(k0, k1)` and the weight `t` of
/// `k1`'s end (beyond the ends, the end segment continued). Along the padded row where the
/// kernel pads one ([`InRow`]: a staircase in the channels), else along the channels; two
/// points of one row length cost alike.
fn in_axis(ins: &[usize], in_row: Option<InRow>, in_channels: usize) -> (usize, usize, f64) {
    let (k0, k1) = segment(ins, in_channels);
    let x = |c: usize| in_row.map_or(c, |r| r.len(c)) as f64;
    let span = x(ins[k1]) - x(ins[k0]);
    let t = if span > 0.0 {
        (x(in_channels) - x(ins[k0])) / span
    } else {
        0.0
    };
    (k0, k1, t)
}

/// Piecewise-linear interpolation through `(xs, ys)` at `x`, continuing the end segments
/// beyond the ends; with one point only that point itself (`None` elsewhere). Returns the
/// value and whether `x` lies outside the points.
fn piecewise(xs: &[f64], ys: &[f64], x: f64) -> Option<(f64, bool)> {
    let outside = x < xs[0] || x > xs[xs.len() - 1];
    if xs.len() == 1 {
        return (x == xs[0]).then_some((ys[0], false));
    }
    let k = xs
        .iter()
        .position(|&v| v >= x)
        .unwrap_or(xs.len() - 1)
        .max(1);
    let (x0, x1, y0, y1) = (xs[k - 1], xs[k], ys[k - 1], ys[k]);
    Some((y0 + (x - x0) / (x1 - x0) * (y1 - y0), outside))
}

/// The points of an output axis split for a register block: the multiples of the block
/// (full blocks), the points below it (a partly filled first block), the cost of each
/// leftover channel count after at least one full block (measured just above the first
/// block), and the cost of one leftover channel (the slope through the points below the
/// block), for counts the measurements above the first block do not cover.
struct Blocked {
    aligned: (Vec<f64>, Vec<f64>),
    tails: (Vec<f64>, Vec<f64>),
    /// `leftover[r - 1]`: what `r` channels after full blocks add, where measured.
    leftover: Vec<Option<f64>>,
    tail_slope: Option<f64>,
}

fn blocked(outs: &[usize], row: &[f64], block: usize) -> Blocked {
    let mut aligned = (Vec::new(), Vec::new());
    let mut tails = (Vec::new(), Vec::new());
    let at = |o: usize| outs.iter().position(|&v| v == o).map(|j| row[j]);
    for (&o, &c) in outs.iter().zip(row) {
        if o % block == 0 {
            aligned.0.push(o as f64);
            aligned.1.push(c);
        } else if o < block {
            tails.0.push(o as f64);
            tails.1.push(c);
        }
    }
    let leftover = (1..block)
        .map(|r| Some(at(block + r)? - at(block)?))
        .collect();
    let n = tails.0.len();
    let tail_slope =
        (n >= 2).then(|| (tails.1[n - 1] - tails.1[0]) / (tails.0[n - 1] - tails.0[0]));
    // With fewer than two full-block points, a virtual point at 0 channels (the first
    // measured count less its leftover channels) lets the full blocks be extrapolated.
    if aligned.0.len() < 2
        && let Some(t) = tail_slope
    {
        aligned.0.insert(0, 0.0);
        aligned.1.insert(0, tails.1[0] - t * tails.0[0]);
    }
    Blocked {
        aligned,
        tails,
        leftover,
        tail_slope,
    }
}

/// The cost along one row of an output axis at `o` channels, and whether `o` is outside the
/// measured range; `None` when the axis has one point and `o` is another count.
fn out_axis(outs: &[usize], row: &[f64], block: usize, o: usize) -> Option<(f64, bool)> {
    if let Some(j) = outs.iter().position(|&v| v == o) {
        return Some((row[j], false));
    }
    let xs: Vec<f64> = outs.iter().map(|&v| v as f64).collect();
    if outs.len() == 1 {
        return None;
    }
    let outside = o < outs[0] || o > outs[outs.len() - 1];
    if block <= 1 {
        return piecewise(&xs, row, o as f64);
    }
    let b = blocked(outs, row, block);
    let (Some(t), true) = (b.tail_slope, b.aligned.0.len() >= 2) else {
        // Not enough points to separate blocks from leftovers (a validated table always has
        // them): plain interpolation.
        return piecewise(&xs, row, o as f64);
    };
    let full = o / block * block;
    if full == 0 {
        // Below one block and not measured: only beyond a very short axis.
        return piecewise(&b.tails.0, &b.tails.1, o as f64).map(|(c, _)| (c, outside));
    }
    let (base, _) = piecewise(&b.aligned.0, &b.aligned.1, full as f64)?;
    let r = o - full;
    let leftover = match b.leftover.get(r.wrapping_sub(1)) {
        Some(Some(measured)) => *measured,
        _ => r as f64 * t,
    };
    Some((base + leftover, outside))
}

/// The cost per output channel along one row: the slope through the multiples of the block
/// (the segment that ends at `o`'s full blocks), or the plain segment slope when unblocked.
fn trend_slope(outs: &[usize], row: &[f64], block: usize, o: usize) -> f64 {
    let (xs, ys): (Vec<f64>, Vec<f64>) = if block <= 1 {
        (outs.iter().map(|&v| v as f64).collect(), row.to_vec())
    } else {
        let b = blocked(outs, row, block);
        if b.aligned.0.len() >= 2 {
            b.aligned
        } else {
            return b.tail_slope.unwrap_or(0.0);
        }
    };
    if xs.len() < 2 {
        return 0.0;
    }
    let x = o as f64;
    let k = xs
        .iter()
        .position(|&v| v >= x)
        .unwrap_or(xs.len() - 1)
        .max(1);
    (ys[k] - ys[k - 1]) / (xs[k] - xs[k - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_piecewise() {
        assert_eq!(segment(&[1, 4, 8], 1), (0, 1));
        assert_eq!(segment(&[1, 4, 8], 4), (0, 1));
        assert_eq!(segment(&[1, 4, 8], 5), (1, 2));
        assert_eq!(segment(&[1, 4, 8], 20), (1, 2));
        let xs = [1.0, 3.0];
        let ys = [10.0, 30.0];
        assert_eq!(piecewise(&xs, &ys, 2.0), Some((20.0, false)));
        assert_eq!(piecewise(&xs, &ys, 5.0), Some((50.0, true)));
        assert_eq!(piecewise(&[2.0], &[7.0], 2.0), Some((7.0, false)));
        assert_eq!(piecewise(&[2.0], &[7.0], 3.0), None);
    }

    #[test]
    fn a_padded_row_makes_the_input_axis_a_staircase() {
        // A 1x1 conv under SMLAD: rows of 4 codes, so 5 to 8 inputs cost what 8 do.
        let row = Some(InRow {
            taps: 1,
            quantum: 4,
        });
        for c in 5..=8 {
            assert_eq!(in_axis(&[1, 8, 16], row, c), (0, 1, 1.0), "{c}");
        }
        // 9 to 12 inputs read 12 codes: half way from 8 to 16.
        assert_eq!(in_axis(&[1, 8, 16], row, 11), (1, 2, 0.5));
        // 1 and 4 are one row long: the segment between them weighs nothing.
        assert_eq!(in_axis(&[1, 4, 16], row, 3), (0, 1, 0.0));
        // Without padding, along the channels.
        assert_eq!(in_axis(&[1, 8, 16], None, 11), (1, 2, 3.0 / 8.0));
        // A 3x3 conv: 9 codes a channel, padded to 4: 20 channels are whole rows (180).
        let row = InRow {
            taps: 9,
            quantum: 4,
        };
        assert_eq!((row.len(17), row.len(20), row.whole_rows()), (156, 180, 4));
        assert_eq!(
            InRow {
                taps: 1,
                quantum: 16
            }
            .whole_rows(),
            16
        );
    }

    #[test]
    fn blocked_axis_adds_leftover_channels_to_full_blocks() {
        // 4-channel blocks cost 100 each, a leftover channel 40, plus 10 fixed.
        let cost = |o: usize| 10.0 + (o / 4) as f64 * 100.0 + (o % 4) as f64 * 40.0;
        let outs = [1, 2, 3, 4, 16, 32];
        let row: Vec<f64> = outs.iter().map(|&o| cost(o)).collect();
        for o in 1..=40 {
            let (c, outside) = out_axis(&outs, &row, 4, o).unwrap();
            assert!((c - cost(o)).abs() < 1e-9, "{o}: {c} vs {}", cost(o));
            assert_eq!(outside, o > 32);
        }
        assert!((trend_slope(&outs, &row, 4, 10) - 25.0).abs() < 1e-12);
        // Parent count not a multiple of the block: exact there, blocks + leftovers below.
        let outs = [1, 2, 3, 4, 8, 10];
        let row: Vec<f64> = outs.iter().map(|&o| cost(o)).collect();
        assert_eq!(out_axis(&outs, &row, 4, 10).unwrap().0, cost(10));
        assert!((out_axis(&outs, &row, 4, 9).unwrap().0 - cost(9)).abs() < 1e-9);
        // One full-block point: the virtual point at 0 carries the extrapolation.
        let outs = [1, 2, 3, 4];
        let row: Vec<f64> = outs.iter().map(|&o| cost(o)).collect();
        assert!((out_axis(&outs, &row, 4, 8).unwrap().0 - cost(8)).abs() < 1e-9);
        assert!((out_axis(&outs, &row, 4, 6).unwrap().0 - cost(6)).abs() < 1e-9);
    }
}
