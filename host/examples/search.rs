//! A DNAL search from Rust: the `dnal search` of the command line as a library call, with an
//! observer of one's own, then the export's own evaluation.
//!
//! ```sh
//! cargo run --release -p dnal --example search -- runs/example
//! ```
//!
//! The data is dnal's synthetic dataset (no download), the network the default `vgg-small`;
//! a FLOPs budget makes the gate stage land on a network of at most half the parent's
//! multiply-accumulates. Swap in `dataset: "fashion-mnist".into()` for real data.

use std::path::PathBuf;

use dnal::budget::Budget;
use dnal::config::SearchConfig;
use dnal::progress::SearchObserver;
use dnal::report::EpochRecord;
use dnal::train::EpochStats;

/// Prints one line per stage and per epoch: what a GUI or a job scheduler would record.
struct EpochLog;

impl SearchObserver for EpochLog {
    fn stage(&mut self, name: &str, epochs: usize, first_epoch: usize, _steps: usize) {
        println!("stage {name}: epochs {}..{epochs}", first_epoch + 1);
    }

    fn step(&mut self, _epoch: usize, _step: usize, _stats: &EpochStats, _live: &str) {}

    fn epoch(&mut self, record: &EpochRecord, note: &str) {
        println!(
            "  {} epoch {}: loss {:.3}, test top-1 {:.1}% {note}",
            record.stage,
            record.epoch,
            record.loss,
            100.0 * record.test_top1
        );
    }

    fn message(&mut self, line: &str) {
        println!("{line}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "runs/example".into()),
    );
    let config = SearchConfig {
        dataset: "synthetic".into(),
        epochs_weights: 2,
        epochs_gates: 2,
        epochs_finetune: 1,
        // Half the MACs of the unpruned network.
        budget: Some(Budget::Flops(
            0.5 * parent_flops(&SearchConfig::default())? as f64,
        )),
        ..SearchConfig::default()
    };
    // The search locks `out`, refuses a folder that holds anything, checkpoints every epoch
    // (`dnal::search::resume` continues a killed run) and exports to `out`.
    let report = dnal::search::search(config, &out, &mut EpochLog)?;
    println!(
        "pruned: {:.2}x fewer MACs, top-1 {:.1}% (parent {:.1}%)",
        report.flops_reduction,
        100.0 * report.pruned.top1,
        100.0 * report.parent.top1
    );

    // The export on disk, evaluated as `dnal eval` does: the same top-1 as the report.
    let eval = dnal::eval::evaluate_export(&out, None, None, dnal::backend::Backend::Cpu)?;
    println!(
        "{} evaluated again: top-1 {:.1}% on {} images",
        out.display(),
        100.0 * eval.accuracy.top1,
        eval.accuracy.images
    );
    Ok(())
}

/// The MACs of the unpruned network the search would train: the model built on the dataset's
/// image shape, without weights.
fn parent_flops(config: &SearchConfig) -> Result<u64, Box<dyn std::error::Error>> {
    let dataset = dnal::data::load_dataset(&SearchConfig {
        dataset: "synthetic".into(),
        train_limit: Some(1),
        test_limit: Some(1),
        ..config.clone()
    })?;
    let spec = dnal_models::model_spec(
        &config.model,
        dnal::data::input_shape(&dataset),
        dataset.num_classes(),
    )?;
    Ok(dnal_models::NetPlan::new(spec, config.gate_position)?.total_flops())
}
