//! Tables that learn: every time a network is measured on a table's board, the (predicted,
//! measured) pair is kept beside the table (`latency.json` -> `latency.measurements.json`),
//! and the pairs fit a correction of the table's predictions.
//!
//! The correction is one scale, `measured ~ scale * predicted`, fitted by least squares
//! through the origin: the table's error on a board is mostly proportional (QEMU's counts run
//! 0.1-0.4% over the sum of the micro-benchmarks, a real board's flash wait states and caches
//! more), and one parameter is safe to fit from the first measurement on. How well it works
//! is told honestly: the mean error of the table's own predictions over the kept pairs, and
//! of the corrected ones with each pair left out of the fit that predicts it.
//!
//! The pairs belong to one table: the log records the table's fingerprint, and a table
//! profiled again starts a new log (its predictions are new).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::table::file_error;
use super::{LatencyError, LatencyTable, Prediction};
use crate::codegen::stamp::Fnv1a;
use crate::deploy::LayerCost;

/// `format` of a measurement log.
pub const LOG_FORMAT: &str = "dnal-latency-measurements";
/// The log version this build writes and reads.
pub const LOG_VERSION: u64 = 1;
/// Pairs kept: the newest, so the correction follows the board (and a log stays small).
pub const MAX_MEASUREMENTS: usize = 256;
/// Largest log file read.
const MAX_LOG_BYTES: u64 = 4 << 20;

/// One network measured on the board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// What was measured (a search's fitted or final network, a deploy).
    pub what: String,
    /// The table's own prediction, in its unit.
    pub predicted: f64,
    /// The board's measurement, in the same unit.
    pub measured: f64,
}

/// The (predicted, measured) pairs of one table's board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasurementLog {
    pub format: String,
    pub version: u64,
    pub board: String,
    pub model: String,
    /// The table these predictions came from ([`fingerprint`]).
    pub table_fingerprint: String,
    /// Oldest first.
    pub measurements: Vec<Measurement>,
}

/// A correction of a table's predictions: `scale * predicted`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    /// Measured over predicted, least squares through the origin.
    pub scale: f64,
    /// The pairs it was fitted on.
    pub measurements: usize,
}

/// How far predictions were from the board over a log's pairs, in percent of the
/// measurement (mean of the absolute errors).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictionErrors {
    /// Pairs in the log.
    pub measurements: usize,
    /// The table's own predictions.
    pub table_pct: f64,
    /// The corrected predictions, each from a correction fitted on the other pairs
    /// (leave-one-out); `None` below two pairs.
    pub corrected_pct: Option<f64>,
}

/// A network measured on a table's board against the table's prediction, before and after
/// the correction the earlier measurements fit; the pair is then kept in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictionCheck {
    /// The table's unit ("instructions", "cycles").
    pub unit: String,
    /// The table's own prediction, in its unit and in ms.
    pub predicted: f64,
    pub predicted_ms: f64,
    /// The prediction corrected by the earlier measurements (none before the first).
    pub corrected: Option<f64>,
    pub corrected_ms: Option<f64>,
    /// The board's measurement.
    pub measured: f64,
    pub measured_ms: f64,
    /// `(predicted - measured) / measured` in percent, and the same for `corrected`.
    pub error_pct: f64,
    pub corrected_error_pct: Option<f64>,
    /// The correction applied, fitted on the earlier measurements.
    pub correction: Option<Correction>,
    /// The errors over every measurement kept, this one included.
    pub errors: Option<PredictionErrors>,
    /// The log the pair was kept in (none for a table not read from a file).
    pub log: Option<PathBuf>,
    /// Each layer's prediction beside its measurement, where the board measured layers
    /// ([`PredictionCheck::with_layers`]): which layers the table misjudges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_layer: Vec<LayerCheck>,
    /// Why the table may predict this firmware less well than its errors say
    /// ([`LatencyTable::code_note`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One layer's share of a [`PredictionCheck`], in the table's unit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCheck {
    /// The layer's name in the export.
    pub name: String,
    /// What the table predicted for it.
    pub predicted: f64,
    /// What the board measured.
    pub measured: f64,
}

impl LayerCheck {
    /// `(predicted - measured) / measured` in percent.
    pub fn error_pct(&self) -> f64 {
        100.0 * (self.predicted - self.measured) / self.measured.max(1.0)
    }
}

impl PredictionCheck {
    /// This check with each layer of `prediction` beside the board's measurement of the
    /// layer of the same name (`measured`, as deploy reports it); layers the board did not
    /// measure are left out.
    pub fn with_layers(mut self, prediction: &Prediction, measured: &[LayerCost]) -> Self {
        self.per_layer = prediction
            .per_layer
            .iter()
            .filter_map(|p| {
                let m = measured.iter().find(|m| m.name == p.name)?;
                Some(LayerCheck {
                    name: p.name.clone(),
                    predicted: p.cost,
                    measured: m.cost,
                })
            })
            .collect();
        self
    }

    /// The `n` layers the table misjudges by the most units, most first.
    pub fn most_off(&self, n: usize) -> Vec<&LayerCheck> {
        let mut layers: Vec<&LayerCheck> = self.per_layer.iter().collect();
        layers.sort_by(|a, b| {
            let off = |l: &LayerCheck| (l.predicted - l.measured).abs();
            off(b).total_cmp(&off(a))
        });
        layers.truncate(n);
        layers
    }
}

impl LatencyTable {
    /// Compares `measured` (in the table's unit) with the table's `prediction` of the network
    /// measured ([`LatencyTable::predict`]; `what` names the network in the log), corrected by
    /// the pairs already kept beside the table, then keeps the pair there.
    pub fn check_and_learn(
        &self,
        prediction: &Prediction,
        measured: f64,
        what: &str,
    ) -> Result<PredictionCheck, LatencyError> {
        let predicted = prediction.total;
        let mut log = MeasurementLog::for_table(self)?;
        let correction = log.correction();
        let corrected = correction.map(|c| c.apply(predicted));
        let pct = |p: f64| 100.0 * (p - measured) / measured;
        log.record(Measurement {
            what: what.into(),
            predicted,
            measured,
        });
        let written = log.write_beside(self)?;
        Ok(PredictionCheck {
            unit: self.unit.clone(),
            predicted,
            predicted_ms: self.to_ms(predicted),
            corrected,
            corrected_ms: corrected.map(|c| self.to_ms(c)),
            measured,
            measured_ms: self.to_ms(measured),
            error_pct: pct(predicted),
            corrected_error_pct: corrected.map(pct),
            correction,
            errors: log.errors(),
            log: written,
            per_layer: Vec::new(),
            note: self.code_note(),
        })
    }
}

impl PredictionErrors {
    /// The errors in words, for the terminal.
    pub fn describe(&self) -> String {
        match self.corrected_pct {
            Some(corrected) => format!(
                "over the {} measurements kept, the table is off by {:.2}% on average, corrected {:.2}% (each left out of its own fit)",
                self.measurements, self.table_pct, corrected
            ),
            None => format!(
                "the first measurement kept beside the table ({:.2}% off)",
                self.table_pct
            ),
        }
    }
}

impl Correction {
    /// The least-squares scale through the origin of `pairs` (predicted, measured); `None`
    /// without a usable pair.
    pub fn fit<'a>(pairs: impl IntoIterator<Item = &'a Measurement>) -> Option<Correction> {
        let (mut pm, mut pp, mut n) = (0.0, 0.0, 0);
        for m in pairs {
            if m.predicted > 0.0 && m.measured > 0.0 {
                pm += m.predicted * m.measured;
                pp += m.predicted * m.predicted;
                n += 1;
            }
        }
        (n > 0).then(|| Correction {
            scale: pm / pp,
            measurements: n,
        })
    }

    /// The corrected prediction of a table prediction `predicted` (any unit).
    pub fn apply(&self, predicted: f64) -> f64 {
        self.scale * predicted
    }
}

/// A fingerprint of a table's predictions (its overhead and every layer's costs): FNV-1a over
/// their JSON, as hex.
pub fn fingerprint(table: &LatencyTable) -> String {
    let mut hash = Fnv1a::new();
    hash.feed(&table.overhead.to_le_bytes());
    hash.feed(&serde_json::to_vec(&table.layers).expect("a table serialises"));
    hash.hex()
}

impl MeasurementLog {
    /// An empty log for `table`.
    pub fn new(table: &LatencyTable) -> Self {
        Self {
            format: LOG_FORMAT.into(),
            version: LOG_VERSION,
            board: table.board.clone(),
            model: table.model.clone(),
            table_fingerprint: fingerprint(table),
            measurements: Vec::new(),
        }
    }

    /// Where the log of the table in `table_path` lives: beside it, `NAME.measurements.json`.
    pub fn path_beside(table_path: &Path) -> PathBuf {
        let stem = table_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "latency".into());
        table_path.with_file_name(format!("{stem}.measurements.json"))
    }

    /// The log of `table` (loaded from a file), or an empty one when there is none yet or
    /// the one there belongs to an earlier version of the table. A log that cannot be read
    /// is an error naming it.
    pub fn for_table(table: &LatencyTable) -> Result<Self, LatencyError> {
        let Some(table_path) = table.origin() else {
            return Ok(Self::new(table));
        };
        let path = Self::path_beside(table_path);
        if !path.exists() {
            return Ok(Self::new(table));
        }
        let text =
            dnal_export::read_regular_file(&path, MAX_LOG_BYTES, "a measurement log may hold")
                .map_err(|e| file_error(&path, e))?;
        let log: MeasurementLog =
            serde_json::from_slice(&text).map_err(|source| LatencyError::Json {
                path: path.clone(),
                source,
            })?;
        let invalid = |field: &str, reason: String| LatencyError::InvalidField {
            path: path.clone(),
            field: field.into(),
            reason,
        };
        if log.format != LOG_FORMAT {
            return Err(invalid(
                "format",
                format!(
                    "is {:?}, not {LOG_FORMAT:?}; move the file away",
                    log.format
                ),
            ));
        }
        if log.version != LOG_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "is {}, this dnal reads {LOG_VERSION}; move the file away",
                    log.version
                ),
            ));
        }
        if let Some(bad) = log
            .measurements
            .iter()
            .find(|m| !(m.predicted.is_finite() && m.measured.is_finite() && m.measured > 0.0))
        {
            return Err(invalid(
                "measurements",
                format!(
                    "{:?} is not a positive, finite pair; move the file away",
                    bad
                ),
            ));
        }
        if log.table_fingerprint != fingerprint(table) || log.board != table.board {
            // The table was profiled again: its old pairs say nothing of its new predictions.
            return Ok(Self::new(table));
        }
        Ok(log)
    }

    /// The correction the pairs fit, if any.
    pub fn correction(&self) -> Option<Correction> {
        Correction::fit(&self.measurements)
    }

    /// How far the table's predictions and the corrected ones were from the board.
    pub fn errors(&self) -> Option<PredictionErrors> {
        let n = self.measurements.len();
        if n == 0 {
            return None;
        }
        let pct = |predicted: f64, measured: f64| 100.0 * (predicted - measured).abs() / measured;
        let table_pct = self
            .measurements
            .iter()
            .map(|m| pct(m.predicted, m.measured))
            .sum::<f64>()
            / n as f64;
        let corrected_pct = (n >= 2).then(|| {
            (0..n)
                .map(|i| {
                    let others = self
                        .measurements
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, m)| m);
                    let m = &self.measurements[i];
                    let predicted =
                        Correction::fit(others).map_or(m.predicted, |c| c.apply(m.predicted));
                    pct(predicted, m.measured)
                })
                .sum::<f64>()
                / n as f64
        });
        Some(PredictionErrors {
            measurements: n,
            table_pct,
            corrected_pct,
        })
    }

    /// Adds a pair (dropping the oldest past [`MAX_MEASUREMENTS`]).
    pub fn record(&mut self, measurement: Measurement) {
        self.measurements.push(measurement);
        let excess = self.measurements.len().saturating_sub(MAX_MEASUREMENTS);
        self.measurements.drain(..excess);
    }

    /// Writes the log beside `table`'s file (through a temporary file and a rename); a table
    /// not read from a file keeps no log.
    pub fn write_beside(&self, table: &LatencyTable) -> Result<Option<PathBuf>, LatencyError> {
        let Some(table_path) = table.origin() else {
            return Ok(None);
        };
        let path = Self::path_beside(table_path);
        let mut json = serde_json::to_vec_pretty(self).map_err(|source| LatencyError::Json {
            path: path.clone(),
            source,
        })?;
        json.push(b'\n');
        dnal_export::write_atomically(&path, &json).map_err(|e| LatencyError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(measurements: Vec<Measurement>) -> MeasurementLog {
        MeasurementLog {
            format: LOG_FORMAT.into(),
            version: LOG_VERSION,
            board: "b".into(),
            model: "m".into(),
            table_fingerprint: "0".into(),
            measurements,
        }
    }

    fn pair(predicted: f64, measured: f64) -> Measurement {
        Measurement {
            what: "a network".into(),
            predicted,
            measured,
        }
    }

    #[test]
    fn the_scale_fits_a_proportional_error_and_the_errors_say_how_well() {
        // A table 4% low on every network.
        let pairs: Vec<Measurement> = [100.0, 250.0, 400.0]
            .iter()
            .map(|&p| pair(p, p / 0.96))
            .collect();
        let fit = Correction::fit(&pairs).unwrap();
        assert!((fit.scale - 1.0 / 0.96).abs() < 1e-12, "{fit:?}");
        assert_eq!(fit.measurements, 3);
        assert!((fit.apply(300.0) - 312.5).abs() < 1e-9);

        let mut log = log_of(pairs);
        let errors = log.errors().unwrap();
        assert!((errors.table_pct - 4.0).abs() < 1e-9, "{errors:?}");
        assert!(errors.corrected_pct.unwrap() < 1e-9, "{errors:?}");
        // Noise the scale cannot explain stays in the corrected error: left-out pairs are
        // predicted by the others' fit, not by one that saw them.
        log.record(pair(100.0, 120.0));
        let errors = log.errors().unwrap();
        assert!(errors.corrected_pct.unwrap() > 2.0, "{errors:?}");
        assert!(
            errors.corrected_pct.unwrap() < errors.table_pct,
            "{errors:?}"
        );
        // One pair: a correction, but no honest error for it.
        let one = log_of(vec![pair(10.0, 11.0)]);
        assert_eq!(one.errors().unwrap().corrected_pct, None);
        assert!((one.correction().unwrap().scale - 1.1).abs() < 1e-12);
        // Nothing measured: nothing fitted.
        assert_eq!(Correction::fit(&[]), None);
    }

    #[test]
    fn the_log_keeps_the_newest_pairs() {
        let mut log = log_of(Vec::new());
        for i in 0..MAX_MEASUREMENTS + 5 {
            log.record(pair(1.0, 1.0 + i as f64));
        }
        assert_eq!(log.measurements.len(), MAX_MEASUREMENTS);
        assert_eq!(log.measurements[0].measured, 6.0);
    }

    #[test]
    fn the_log_lives_beside_its_table() {
        assert_eq!(
            MeasurementLog::path_beside(Path::new("runs/a/latency.json")),
            Path::new("runs/a/latency.measurements.json")
        );
        assert_eq!(
            MeasurementLog::path_beside(Path::new("m7.json")),
            Path::new("m7.measurements.json")
        );
    }
}
