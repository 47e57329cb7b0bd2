//! The board's measured latency as a cost of the search: `dnal profile` (a latency table for a
//! model on a board), the table as a [`CostEstimate`] over the channel groups, and the
//! measurement of a pruned network on the board after the search.

use std::path::Path;

use dnal_export::{Arch, Precision};
use dnal_firmware::DeployRequest;
use dnal_firmware::codegen::Network;
use dnal_firmware::latency::{
    Correction, GridOptions, LatencyTable, MeasurementLog, ProfileOptions, profile,
};
use dnal_models::{ChannelMasks, NetPlan};

use crate::budget::CostEstimate;
use crate::error::SearchError;
use crate::export::{reference_logits, structure_arch};
use crate::report::LatencyReport;

/// The latency table of a network's layers, read over its channel groups: the cost of a
/// network with `counts[g]` channels in group `g`, in milliseconds at the table's clock.
/// Fractional counts (expected counts under soft gates) interpolate between the integer
/// counts around them, so the estimate is a continuous, piecewise-linear function of the
/// gate values.
pub struct LatencyEstimate {
    table: LatencyTable,
    /// What the measurements kept beside the table correct its predictions by.
    correction: Option<Correction>,
    /// Per layer: its name, the group it reads and the group it writes.
    layers: Vec<(String, usize, usize)>,
}

impl LatencyEstimate {
    /// Checks that the table covers every layer of `plan` (same model, structure and parent
    /// channel counts) and prepares lookups; predictions are corrected by the measurements
    /// kept beside the table (a table that learns, [`MeasurementLog`]).
    pub fn new(table: LatencyTable, plan: &NetPlan) -> Result<Self, SearchError> {
        let arch = parent_arch(plan)?;
        // `predict` checks the model, the input and every layer's structure.
        table.predict(&arch)?;
        let layers = plan
            .spec
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                (
                    node.name.clone(),
                    plan.groups.value_group[node.inputs[0]],
                    plan.groups.value_group[i + 1],
                )
            })
            .collect();
        let correction = MeasurementLog::for_table(&table)?.correction();
        Ok(Self {
            table,
            correction,
            layers,
        })
    }

    /// The table.
    pub fn table(&self) -> &LatencyTable {
        &self.table
    }

    /// One layer's cost (units) at fractional counts: bilinear between the integer counts.
    fn layer_cost(&self, name: &str, x: f64, y: f64, same_group: bool) -> f64 {
        let look = |i: usize, o: usize| {
            self.table
                .lookup(name, i, o)
                .map(|l| l.cost)
                .expect("the table covers the layer (checked in new)")
        };
        // A supernet's branch pruned to no channels is removed with its layers.
        if x <= 0.0 || y <= 0.0 {
            return 0.0;
        }
        let (x, y) = (x.max(1.0), y.max(1.0));
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (tx, ty) = (x - x0 as f64, y - y0 as f64);
        if same_group {
            // Channel-keeping layers (pools, depthwise, add) take one count.
            return look(x0, x0) * (1.0 - tx) + look(x0 + 1, x0 + 1) * tx;
        }
        let c00 = look(x0, y0);
        let c10 = if tx > 0.0 { look(x0 + 1, y0) } else { c00 };
        let c01 = if ty > 0.0 { look(x0, y0 + 1) } else { c00 };
        let c11 = if tx > 0.0 && ty > 0.0 {
            look(x0 + 1, y0 + 1)
        } else if tx > 0.0 {
            c10
        } else {
            c01
        };
        c00 * (1.0 - tx) * (1.0 - ty)
            + c10 * tx * (1.0 - ty)
            + c01 * (1.0 - tx) * ty
            + c11 * tx * ty
    }

    /// The cost in the table's units.
    pub fn total_units(&self, counts: &[f64]) -> f64 {
        self.table.overhead
            + self
                .layers
                .iter()
                .map(|(name, gi, go)| self.layer_cost(name, counts[*gi], counts[*go], gi == go))
                .sum::<f64>()
    }
}

impl CostEstimate for LatencyEstimate {
    fn unit(&self) -> &'static str {
        "ms"
    }

    fn total(&self, counts: &[f64]) -> f64 {
        let units = self.total_units(counts);
        self.table
            .to_ms(self.correction.map_or(units, |c| c.apply(units)))
    }

    /// The saving per channel of removing up to one register block (4 channels) of the group:
    /// the trend, not the saw-tooth of partly filled blocks.
    fn marginal(&self, group: usize, counts: &[f64]) -> f64 {
        let n = counts[group];
        let step = (n - 1.0).clamp(0.0, 4.0);
        if step <= 0.0 {
            return 0.0;
        }
        let mut fewer = counts.to_vec();
        fewer[group] = n - step;
        (self.total(counts) - self.total(&fewer)) / step
    }
}

/// The architecture of `plan`'s unpruned network: what `dnal profile` measures and what a
/// table is checked against.
fn parent_arch(plan: &NetPlan) -> Result<Arch, SearchError> {
    structure_arch(plan, plan, &ChannelMasks::full(plan))
}

/// Profiles every layer of `plan`'s network on `board`, as firmware of `precision` (int8:
/// with 3x3 convolutions by Winograd's F(2x2, 3x3) where `winograd`), and writes the table to
/// `out`.
pub fn profile_model(
    plan: &NetPlan,
    board: &str,
    out: &Path,
    grid: &GridOptions,
    (precision, winograd): (Precision, bool),
) -> Result<LatencyTable, SearchError> {
    let arch = parent_arch(plan)?;
    let options = ProfileOptions {
        precision,
        winograd,
        ..ProfileOptions::default()
    };
    let table = profile(&arch, board, grid, &options)?;
    table.write(out)?;
    // Read back, so that it knows its file (its measurements are kept beside it).
    Ok(LatencyTable::load(out)?)
}

/// Refuses a table (read from `path`, given as `option`) of firmware of another precision
/// than the network's: int8 layers cost differently from f32 ones.
pub fn check_table_precision(
    table: &LatencyTable,
    path: &Path,
    option: &'static str,
    precision: Precision,
) -> Result<(), SearchError> {
    if table.precision == precision {
        return Ok(());
    }
    Err(SearchError::InvalidOption {
        option,
        value: path.display().to_string(),
        reason: format!(
            "was measured on {} firmware, but the network is {}, whose layers cost differently; \
             profile the board for it: `dnal profile --board {} --precision {}`",
            table.precision.name(),
            precision.name(),
            table.board,
            precision.name()
        ),
    })
}

/// Refuses a table (read from `path`, given as `option`) measured with 3x3 convolutions run
/// another way than the firmware will run them (`winograd`: by Winograd's F(2x2, 3x3)).
pub fn check_table_winograd(
    table: &LatencyTable,
    path: &Path,
    option: &'static str,
    winograd: bool,
) -> Result<(), SearchError> {
    if table.winograd == winograd {
        return Ok(());
    }
    let how = |on: bool| {
        if on {
            "by Winograd's F(2x2, 3x3)"
        } else {
            "directly"
        }
    };
    Err(SearchError::InvalidOption {
        option,
        value: path.display().to_string(),
        reason: format!(
            "was measured with 3x3 convolutions run {}, but this firmware runs them {}, at \
             another cost; {} --winograd, or profile the board as this firmware runs: `dnal \
             profile --board {} --precision int8{}`",
            how(table.winograd),
            how(winograd),
            if table.winograd { "add" } else { "drop" },
            table.board,
            if winograd { " --winograd" } else { "" }
        ),
    })
}

/// Test images run on the board to measure a network: enough for a mean, few enough to keep
/// QEMU runs short.
pub const MEASURE_IMAGES: usize = 4;

/// Deploys `network` (f32 or int8, loaded from the folder `dirs.0`) to the table's board,
/// runs it on a few of `test_images` (normalised), and compares the measured cost with the
/// table's prediction, as is and corrected by the measurements kept beside the table; this
/// one (`what` it is) is kept there too. The firmware goes to `dirs.1/firmware-BOARD`. An f32
/// network's logits are checked against burn's, an int8 one's against the integer
/// reference, bit for bit.
pub fn measure_on_board(
    network: Network<'_>,
    (dir, firmware_root): (&Path, &Path),
    table: &LatencyTable,
    test_images: &[Vec<f32>],
    what: &str,
) -> Result<LatencyReport, SearchError> {
    let table_path = table.origin().unwrap_or(dir);
    check_table_precision(table, table_path, "--latency-table", network.precision())?;
    let prediction = table.predict(network.arch())?;
    let images = test_images[..test_images.len().min(MEASURE_IMAGES)].to_vec();
    let firmware = firmware_root.join(format!("firmware-{}", table.board));
    let mut request = DeployRequest::new(dir, &table.board, &firmware);
    request.run = true;
    // Measured as the table was: its 3x3 convolutions run the same kernels.
    request.winograd = table.winograd;
    if let Network::F32(export) = network {
        request.reference_logits = Some(reference_logits(export, &images)?);
        request.reference_name = "burn".into();
    }
    request.images = images;
    let mut report = dnal_firmware::deploy_loaded(network, &request)?;
    let cost = report
        .cost
        .clone()
        .ok_or_else(|| SearchError::InvalidOption {
            option: "--board",
            value: table.board.clone(),
            reason: "the board ran the firmware but reported no cost".into(),
        })?;
    let measured = cost.per_inference;
    let check = table.check_and_learn(&prediction, measured, what)?;
    report.prediction = Some(check.clone());
    report.write(&firmware)?;
    Ok(LatencyReport {
        board: table.board.clone(),
        unit: table.unit.clone(),
        clock_hz: table.clock.hz,
        cycles_per_unit: table.clock.cycles_per_unit,
        predicted_units: check.predicted,
        predicted_ms: check.predicted_ms,
        measured_units: check.measured,
        measured_ms: check.measured_ms,
        error_pct: check.error_pct,
        extrapolated: prediction.extrapolated,
        corrected_ms: check.corrected_ms,
        errors: check.errors,
        measurements: check.log,
        firmware,
        note: check.note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnal_firmware::synth::{modelled_latency_table, vgg_small_arch};

    /// A table measured with the 3x3 convolutions run one way is refused for firmware that
    /// runs them the other, with the option that fixes it; and only an int8 table of a DSP
    /// board may say Winograd.
    #[test]
    fn a_table_of_other_3x3_kernels_is_refused_with_the_fix() {
        let mut table = modelled_latency_table(
            &vgg_small_arch(),
            "cortex-m7-qemu",
            &GridOptions::default(),
            |_, i, o| (i * o) as f64,
        )
        .unwrap();
        let path = Path::new("m7.json");
        let refusal = |table: &LatencyTable, winograd: bool| {
            check_table_winograd(table, path, "--latency-table", winograd)
                .unwrap_err()
                .to_string()
        };
        // A Winograd table of f32 firmware is not a table.
        table.winograd = true;
        let e = table.validate(path).unwrap_err().to_string();
        assert!(e.contains("winograd") && e.contains("f32"), "{e}");

        table.precision = Precision::Int8;
        table.validate(path).unwrap();
        assert!(check_table_winograd(&table, path, "--latency-table", true).is_ok());
        let e = refusal(&table, false);
        assert!(
            e.contains("m7.json") && e.contains("by Winograd") && e.contains("add --winograd"),
            "{e}"
        );
        table.winograd = false;
        assert!(check_table_winograd(&table, path, "--latency-table", false).is_ok());
        let e = refusal(&table, true);
        assert!(
            e.contains("drop --winograd")
                && e.contains("dnal profile --board cortex-m7-qemu --precision int8 --winograd"),
            "{e}"
        );

        // Not on a board without the DSP kernels.
        let mut a64 = modelled_latency_table(
            &vgg_small_arch(),
            "aarch64-qemu",
            &GridOptions::default(),
            |_, i, o| (i * o) as f64,
        )
        .unwrap();
        a64.precision = Precision::Int8;
        a64.winograd = true;
        let e = a64.validate(path).unwrap_err().to_string();
        assert!(e.contains("aarch64-qemu"), "{e}");
    }
}
