//! Errors of the search library. Each names the value or file at fault and the fix.

use std::path::PathBuf;

use thiserror::Error;

/// What can stop a search, an evaluation or an export.
#[derive(Debug, Error)]
pub enum SearchError {
    /// The dataset could not be loaded.
    #[error(transparent)]
    Dataset(#[from] dnal_datasets::DatasetError),
    /// The model could not be built or pruned.
    #[error(transparent)]
    Model(#[from] dnal_models::ModelError),
    /// An export could not be read or written.
    #[error(transparent)]
    Export(#[from] dnal_export::ExportError),
    /// A latency table could not be made, read or used.
    #[error(transparent)]
    Latency(#[from] dnal_firmware::latency::LatencyError),
    /// The firmware could not be generated, built or run.
    #[error(transparent)]
    Deploy(#[from] dnal_firmware::DeployError),
    /// A backend that this build does not include.
    #[error(
        "this dnal was built without the {backend} backend; rebuild with `cargo build --release --features {feature}` or pick --backend cpu"
    )]
    BackendMissing {
        /// The backend asked for.
        backend: &'static str,
        /// The cargo feature that brings it.
        feature: &'static str,
    },
    /// A nonsensical setting.
    #[error("{option} = {value}: {reason}")]
    InvalidOption {
        /// The option, as the CLI spells it.
        option: &'static str,
        /// Its value.
        value: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// An f32 export that int8 cannot hold.
    #[error("{export}: cannot be quantised to int8: {reason}", export = .export.display())]
    Quantize {
        /// The f32 export.
        export: PathBuf,
        /// Why, and what would do.
        reason: String,
    },
    /// The loss stopped being a number.
    #[error("the {stage} stage's loss became {value} at epoch {epoch}, step {step}; the last good checkpoint is kept in {checkpoint}. Lower the learning rate (--lr, --lr-gates, --lr-finetune) or --lambda, then continue with `dnal search --resume {dir}`", dir = .out.display(), checkpoint = .checkpoint.display())]
    NonFiniteLoss {
        /// The stage.
        stage: String,
        /// 1-based epoch.
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// The loss value.
        value: f32,
        /// Where the last good checkpoint is.
        checkpoint: PathBuf,
        /// The search's folder.
        out: PathBuf,
    },
    /// The network's outputs stopped being numbers.
    #[error(
        "{what} outputs {value} for test image {image}, so its accuracy would be meaningless (a NaN ranks as a hit); {fix}"
    )]
    NonFiniteOutput {
        /// The network (the stage and epoch, or the export).
        what: String,
        /// 0-based index of the test image.
        image: usize,
        /// The logit.
        value: f32,
        /// What to do.
        fix: String,
    },
    /// Another process is writing the same folder.
    #[error("{path} is in use by another dnal process (a search, sweep, deploy or profile writing into it); wait for it to finish or choose another folder", path = .path.display())]
    Busy {
        /// The locked folder.
        path: PathBuf,
    },
    /// A file or folder could not be read or written.
    #[error("{path}: {action} failed: {source}; {fix}", path = .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
        /// How to fix it.
        fix: &'static str,
    },
    /// A checkpoint that cannot be used.
    #[error("{path}: {reason}", path = .path.display())]
    Checkpoint {
        /// The checkpoint file or folder.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A plot could not be drawn.
    #[error("{path}: plotting failed: {reason}", path = .path.display())]
    Plot {
        /// The file (or the font) at fault.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// burn could not save or load a record.
    #[error("{path}: {reason}", path = .path.display())]
    Record {
        /// The file.
        path: PathBuf,
        /// burn's message.
        reason: String,
    },
}

impl SearchError {
    /// An I/O error with its path and a fix.
    pub fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        fix: &'static str,
    ) -> impl FnOnce(std::io::Error) -> SearchError {
        let path = path.into();
        move |source| SearchError::Io {
            path,
            action,
            source,
            fix,
        }
    }
}
