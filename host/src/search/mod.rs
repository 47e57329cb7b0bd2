//! The DNAL search, end to end: weight stage, gate stage, pruning, finetuning, export.
//!
//! The search is a small state machine whose state (`OUT/checkpoint/state.json`) is written
//! after every epoch next to a checkpoint of the model and its optimizer, so a killed run
//! continues where it stopped (`dnal search --resume OUT`) and reproduces the uninterrupted run:
//! the data order and augmentation of every epoch depend only on the seed and the epoch.

//! The parts, in the order a search meets them:
//! - [`state`]: what `state.json` records, and its reader;
//! - `run`: the search opened in its locked folder, and the loop over the stages;
//! - `stages`: the weight, gate and finetune stages, and the channels the gates keep;
//! - `epochs`: one stage's epochs, each evaluated, recorded and checkpointed;
//! - `finish`: the exports, the export's own evaluation, the board's measurement, the report.

mod epochs;
mod finish;
mod fit;
mod run;
mod stages;
pub mod state;

use std::fs;
use std::path::Path;

use crate::checkpoint::{CheckpointDir, read_json, write_json};
use crate::config::SearchConfig;
use crate::error::SearchError;
use crate::lock::OutputLock;
use crate::progress::SearchObserver;
use crate::report::{Report, StageReport};

use run::Search;
use state::read_state;
pub use state::{STATE_FORMAT, SearchState, Stage};

/// Where a search exports the unpruned network, under its output folder.
pub const PARENT_EXPORT: &str = "parent";

/// Where a search with `--precision int8` writes the int8 export, under its output folder.
pub const INT8_EXPORT: &str = "int8";

/// Starts a new search in `out`, which must be empty or absent. `out` is locked for the whole
/// run: a second process writing into it fails at once.
pub fn search(
    config: SearchConfig,
    out: &Path,
    observer: &mut dyn SearchObserver,
) -> Result<Report, SearchError> {
    config.validate()?;
    let created = !out.exists();
    let lock = OutputLock::acquire(out)?;
    prepare_out(out)?;
    let search = match Search::start(SearchState::new(config), lock) {
        Ok(search) => search,
        Err(e) => {
            // Refused before its state was written (no data, an unreachable budget): a folder
            // this run made and left empty is removed. One holding a profiled latency table
            // is kept, for the next start to reuse.
            if created {
                let _ = fs::remove_dir(out.join("checkpoint"));
                let _ = fs::remove_dir(out);
            }
            return Err(e);
        }
    };
    search
        .run(observer, Stage::Done)
        .map(|r| r.expect("a run to the end reports"))
}

/// Continues the search whose folder is `out`.
pub fn resume(out: &Path, observer: &mut dyn SearchObserver) -> Result<Report, SearchError> {
    let lock = OutputLock::acquire(out)?;
    let state = read_state(out)?;
    if state.stage == Stage::Done {
        observer.message(&format!(
            "{} is already complete; its report is {}",
            out.display(),
            out.join("report.json").display()
        ));
        return read_json(&out.join("report.json"));
    }
    state.config.validate()?;
    Search::open(state, lock)?
        .run(observer, Stage::Done)
        .map(|r| r.expect("a run to the end reports"))
}

/// Runs (or continues) the search in `out` only up to the end of its weight stage: the
/// trained parent in `OUT/checkpoint/weights-final` and `OUT/parent`, which sweeps share.
/// Starts a new search when `out` holds none.
pub fn train_weights(
    config: SearchConfig,
    out: &Path,
    observer: &mut dyn SearchObserver,
) -> Result<SearchState, SearchError> {
    let lock = OutputLock::acquire(out)?;
    let mut search = if CheckpointDir::new(out).state_path().exists() {
        let state = read_state(out)?;
        if state.stage != Stage::Weights {
            return Ok(state);
        }
        Search::open(state, lock)?
    } else {
        config.validate()?;
        prepare_out(out)?;
        Search::start(SearchState::new(config), lock)?
    };
    search.run_stages(observer, Stage::Gates)?;
    Ok(search.state)
}

/// The settings of the search in `from`, as its state records them: what a search started
/// after its weight stage inherits.
pub fn settings_of(from: &Path) -> Result<SearchConfig, SearchError> {
    Ok(read_state(from)?.config)
}

/// Starts a search in `to` from the end of the weight stage of the search in `from` (which
/// [`train_weights`] ran): the parent's weights are reused, `config` (the same data, model,
/// weight stage and seed, with its own gate-stage settings) decides the rest.
pub fn fork_after_weights(from: &Path, to: &Path, config: SearchConfig) -> Result<(), SearchError> {
    config.validate()?;
    let source = CheckpointDir::new(from);
    let state = finished_weight_stage(from, &config)?;
    let _lock = OutputLock::acquire(to)?;
    prepare_out(to)?;
    let target = CheckpointDir::new(to);
    target.create()?;
    let tag = format!("{}-final", Stage::Weights.name());
    let sums = state.checksums.get(&tag).cloned();
    target.copy_from(&source, &tag, sums.as_ref())?;
    let forked = SearchState {
        format: STATE_FORMAT,
        config,
        stage: Stage::Gates,
        epochs_done: 0,
        checkpoint: Some(tag.clone()),
        masks: None,
        parent: state.parent,
        // The weight stage's epochs and time are the source's: the report says so.
        stages: state
            .stages
            .into_iter()
            .filter(|s| s.name == Stage::Weights.name())
            .map(|s| StageReport {
                inherited_from: Some(std::path::absolute(from).unwrap_or_else(|_| from.into())),
                ..s
            })
            .collect(),
        history: state
            .history
            .into_iter()
            .filter(|e| e.stage == Stage::Weights.name())
            .collect(),
        gates: Vec::new(),
        gate_lambda: None,
        gate_landing: None,
        gate_trend: None,
        gate_trace: None,
        budget: None,
        checksums: sums.map(|s| (tag, s)).into_iter().collect(),
        warnings: Vec::new(),
    };
    write_json(&target.state_path(), &forked)
}

/// The state of the search in `from`, if its weight stage has finished with the settings that
/// decide a parent for `config` (data, image shape, model, limit, seed, gate position, epochs):
/// what a search or sweep may start from in its place.
pub fn finished_weight_stage(
    from: &Path,
    config: &SearchConfig,
) -> Result<SearchState, SearchError> {
    let state = read_state(from)?;
    let path = CheckpointDir::new(from).state_path();
    if state.stage == Stage::Weights {
        return Err(SearchError::Checkpoint {
            path,
            reason: "its weight stage has not finished; run it first".into(),
        });
    }
    let same = |a: &SearchConfig, b: &SearchConfig| {
        a.dataset == b.dataset
            && a.model == b.model
            && a.width == b.width
            && a.train_limit == b.train_limit
            && a.epochs_weights == b.epochs_weights
            && a.seed == b.seed
            && a.gate_position == b.gate_position
            && a.image_size == b.image_size
            && a.channels == b.channels
    };
    if !same(&state.config, config) {
        return Err(SearchError::Checkpoint {
            path,
            reason: "its weight stage used another dataset, image shape, model, width, limit, seed, gate position or epoch count than this search".into(),
        });
    }
    Ok(state)
}

/// Refuses an `--out` folder that already holds something, or that cannot be written. The
/// caller holds the folder's lock, so nothing appears in it between this check and the run.
fn prepare_out(out: &Path) -> Result<(), SearchError> {
    if out.join("checkpoint").join("state.json").exists() {
        return Err(SearchError::InvalidOption {
            option: "--out",
            value: out.display().to_string(),
            reason: "already holds a search; continue it with `dnal search --resume DIR` or choose a new --out".into(),
        });
    }
    // What a start that stopped before its state was written leaves (the board's latency
    // table, profiled first) does not make the folder someone else's.
    let leftover_of_a_start = |entry: &fs::DirEntry| {
        let name = entry.file_name();
        name == dnal_firmware::latency::TABLE_FILE
            || (name == "checkpoint"
                && fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none()))
    };
    if let Ok(entries) = fs::read_dir(out)
        && entries.flatten().any(|e| !leftover_of_a_start(&e))
    {
        return Err(SearchError::InvalidOption {
            option: "--out",
            value: out.display().to_string(),
            reason: "is not empty; choose a new or empty folder so that nothing is overwritten"
                .into(),
        });
    }
    fs::create_dir_all(out).map_err(SearchError::io(
        out,
        "creating the output folder",
        "choose an --out folder you can write to",
    ))?;
    // Creating a folder can succeed where writing files does not (read-only bind mounts).
    let probe = out.join(".dnal-write-test");
    fs::write(&probe, b"").map_err(SearchError::io(
        out,
        "writing into the output folder",
        "choose an --out folder you can write to",
    ))?;
    let _ = fs::remove_file(probe);
    Ok(())
}
