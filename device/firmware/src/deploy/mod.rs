//! Deploying a model: generate the firmware crate, build it for a board, run it (QEMU, a real
//! board through probe-rs, or natively), and report sizes, cost and parity in `deploy.json`.
//!
//! A firmware builds into its own `target/` folder by default, as `cargo build` in the
//! firmware folder would; [`DeployRequest::firmware_target_dir`] (or the environment variable
//! [`SHARED_TARGET_ENV`]) lets a caller that builds many firmwares share one, so that
//! cortex-m-rt and friends build once.

pub mod elf;
mod run;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::board::{self, Board, CostUnit, Int8Simd, Runner};
use crate::codegen::{self, CodegenError, FirmwareOptions, Network};
use dnal_export::{AnyExport, ExportError, Precision};

pub(crate) use run::{RawRun, run_raw};
pub use run::{RunOutput, build_insn_count_plugin};

/// What to deploy where.
#[derive(Clone, Debug)]
pub struct DeployRequest {
    /// The export folder (arch.json + weights.safetensors).
    pub export_dir: PathBuf,
    /// A board name from [`board::BOARDS`].
    pub board: String,
    /// Where the firmware crate and `deploy.json` go (replaced if it holds an earlier
    /// firmware; refused if it holds anything else).
    pub out_dir: PathBuf,
    /// Run the firmware after building it.
    pub run: bool,
    /// Test images, CHW, normalised, `input_len` values each; embedded in the firmware.
    /// Empty: a few deterministic pseudo-random images are used instead.
    pub images: Vec<Vec<f32>>,
    /// The host's logits for `images` (burn's forward); parity is measured against them when
    /// given, else against [`dnal_export::reference_forward`].
    pub reference_logits: Option<Vec<Vec<f32>>>,
    /// What made `reference_logits`, as deploy.json and the messages name it (default
    /// `"caller"`; dnal says `"burn"`).
    pub reference_name: String,
    /// How many times to run the firmware (2 or more checks that the cost repeats exactly).
    pub runs: usize,
    /// Cargo target directory for the firmware build (default: [`SHARED_TARGET_ENV`] when set,
    /// else `target/` inside `out_dir`, kept across deploys into the same folder). Nothing in
    /// the firmware folder refers to it: the crate builds anywhere.
    pub firmware_target_dir: Option<PathBuf>,
    /// Longest a single firmware run may take.
    pub run_timeout: Duration,
    /// How close the firmware's logits must be to the reference's; [`deploy`] fails (after
    /// writing `deploy.json`) when they are not.
    pub parity_tolerance: ParityTolerance,
    /// int8 on a board with the DSP extension: 3x3 convolutions at stride 1 by Winograd's
    /// F(2x2, 3x3) where they take it ([`crate::board::Int8Simd::with_winograd`]): fewer
    /// instructions for a larger arena. Refused for other firmware.
    pub winograd: bool,
}

/// How close a firmware's logits must be to the reference's for [`deploy`] to succeed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParityTolerance {
    /// Largest `|firmware - reference|` over all logits, relative to the reference's logit
    /// scale (`max(1, largest |reference logit|)`). Float sums in another order differ by
    /// about 1e-6 relative (measured differences: BENCHMARKS.md);
    /// a wrong kernel or weight differs by far more.
    pub max_rel_diff: f32,
    /// Smallest fraction of images whose top-1 class must agree. An image whose reference
    /// top two logits lie within the logit tolerance of each other (a tie to within
    /// rounding) counts as agreeing whichever of the two the firmware picks.
    pub min_top1_agreement: f64,
}

impl ParityTolerance {
    /// [`DEFAULT_PARITY_TOLERANCE`].
    pub const DEFAULT: ParityTolerance = DEFAULT_PARITY_TOLERANCE;
    /// Bit for bit: what int8 firmware must meet against the integer reference.
    pub const EXACT: ParityTolerance = ParityTolerance {
        max_rel_diff: 0.0,
        min_top1_agreement: 1.0,
    };
}

impl Default for ParityTolerance {
    fn default() -> Self {
        DEFAULT_PARITY_TOLERANCE
    }
}

/// Logits within 1e-3 of the reference's scale, every image's top-1 agreeing: about 100
/// times the differences that summation order causes.
pub const DEFAULT_PARITY_TOLERANCE: ParityTolerance = ParityTolerance {
    max_rel_diff: 1e-3,
    min_top1_agreement: 1.0,
};

impl DeployRequest {
    pub fn new(
        export_dir: impl Into<PathBuf>,
        board: impl Into<String>,
        out_dir: impl Into<PathBuf>,
    ) -> Self {
        DeployRequest {
            export_dir: export_dir.into(),
            board: board.into(),
            out_dir: out_dir.into(),
            run: false,
            images: Vec::new(),
            reference_logits: None,
            reference_name: "caller".into(),
            runs: 1,
            firmware_target_dir: None,
            run_timeout: Duration::from_secs(600),
            parity_tolerance: DEFAULT_PARITY_TOLERANCE,
            winograd: false,
        }
    }
}

/// `deploy.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployReport {
    pub board: String,
    pub target: String,
    pub cpu: String,
    pub model: String,
    /// The firmware's number format (the export's).
    #[serde(default)]
    pub precision: Precision,
    pub export_dir: PathBuf,
    pub firmware_dir: PathBuf,
    /// The built firmware, copied into the firmware folder.
    pub elf: PathBuf,
    /// .vector_table + .text + .rodata + .data (all allocated sections with contents).
    pub flash_bytes: u64,
    /// .data + .bss + .uninit (all writable allocated sections), without the stack.
    pub ram_bytes: u64,
    pub flash_budget_bytes: u64,
    pub ram_budget_bytes: u64,
    /// Peak stack measured by stack painting; `None` when not run.
    pub stack_bytes: Option<u64>,
    pub weights_bytes: u64,
    /// Embedded test images (flash).
    pub images_bytes: u64,
    pub arena_bytes: u64,
    /// Largest total of activations live during one layer: no arena can be smaller.
    pub arena_lower_bound_bytes: u64,
    pub macs: u64,
    pub params: u64,
    /// `None` when not run.
    pub cost: Option<Cost>,
    /// `None` when not run.
    pub parity: Option<Parity>,
    /// Logits of each image from the firmware (int8 firmware: the codes); empty when not
    /// run.
    pub logits: Vec<Vec<f32>>,
    /// The measured cost against a latency table's prediction (`dnal deploy --latency-table`,
    /// and every measurement a search makes); the pair is kept beside the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<crate::latency::PredictionCheck>,
    /// int8 firmware: how often its top-1 agrees with the f32 network it was quantised from,
    /// on the embedded images (`dnal deploy` of an int8 export whose f32 source is at hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f32_agreement: Option<Top1Agreement>,
    /// int8 firmware whose 3x3 convolutions ran by Winograd's F(2x2, 3x3)
    /// ([`DeployRequest::winograd`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub winograd: bool,
}

/// Top-1 agreement of a firmware's logits with another network's on the same images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Top1Agreement {
    /// The other network (an export folder).
    pub reference: PathBuf,
    pub images: usize,
    /// Fraction of images whose top-1 class (first largest logit) is the same.
    pub top1_agreement: f64,
    /// The images where it is not.
    pub disagreements: Vec<usize>,
}

/// The class a row of logits picks: the first of its largest values, as top-1 counts it (0
/// for an empty row).
pub fn top1_class(logits: &[f32]) -> usize {
    logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 { (i, x) } else { best }
        })
        .0
}

impl Top1Agreement {
    /// Compares `got` with `want` row by row.
    pub fn of(reference: PathBuf, got: &[Vec<f32>], want: &[Vec<f32>]) -> Self {
        let disagreements: Vec<usize> = got
            .iter()
            .zip(want)
            .enumerate()
            .filter(|(_, (g, w))| top1_class(g) != top1_class(w))
            .map(|(i, _)| i)
            .collect();
        let images = got.len().min(want.len());
        Top1Agreement {
            reference,
            images,
            top1_agreement: (images - disagreements.len()) as f64 / images.max(1) as f64,
            disagreements,
        }
    }
}

/// Cost of an inference on the board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// "instructions" (QEMU plugin count, not cycles), "cycles" (DWT) or "wall_ns".
    pub unit: String,
    /// Mean over the images.
    pub per_inference: f64,
    /// `per_inference / MACs`.
    pub per_mac: f64,
    /// One value per image, per run.
    pub per_image_runs: Vec<Vec<u64>>,
    /// True when two or more runs gave identical per-image costs; `None` with one run.
    pub repeat_runs_identical: Option<bool>,
    /// Per layer, mean over the images; empty where the board measures none (host).
    pub per_layer: Vec<LayerCost>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCost {
    pub name: String,
    pub op: String,
    pub macs: u64,
    pub cost: f64,
}

/// Firmware logits against reference logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parity {
    /// The request's `reference_name` (the logits the caller passed) or "reference_forward"
    /// (this crate's).
    pub reference: String,
    pub images: usize,
    pub max_abs_diff: f32,
    /// Fraction of images whose arg-max class agrees.
    pub top1_agreement: f64,
    /// `max(1, largest |reference logit|)`: what `max_abs_diff` is measured against.
    #[serde(default)]
    pub logit_scale: f32,
    /// `max_abs_diff / logit_scale`.
    #[serde(default)]
    pub max_rel_diff: f32,
    /// Images whose top-1 differs although the reference's top two are not tied within the
    /// tolerance.
    #[serde(default)]
    pub top1_disagreements: Vec<usize>,
    /// The tolerance checked.
    #[serde(default)]
    pub tolerance: Option<ParityTolerance>,
    /// True when the logits are within the tolerance.
    #[serde(default)]
    pub within_tolerance: bool,
}

/// Why a deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("unknown board {name:?}; boards: {known}")]
    UnknownBoard { name: String, known: String },
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error(
        "the model does not fit {board}: {memory} needs {needed} bytes, the board has {available} ({detail})"
    )]
    OverBudget {
        board: String,
        memory: &'static str,
        needed: u64,
        available: u64,
        detail: String,
    },
    #[error("{0}")]
    Images(String),
    #[error("{0}")]
    NoWinograd(String),
    #[error("{path}: {reason}", path = .path.display())]
    OutDir { path: PathBuf, reason: String },
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} is needed: {hint}")]
    ToolMissing { tool: String, hint: String },
    #[error("building the firmware in {dir} failed:\n{log}", dir = .dir.display())]
    Build { dir: PathBuf, log: String },
    #[error("running the firmware failed: {0}")]
    Run(String),
    #[error(
        "the {source_name} logits of image {image} hold {value} at class {class}; logits must be \
         finite (weights or inputs too large for f32?); see deploy.json"
    )]
    NonFiniteLogits {
        /// "firmware", the request's `reference_name` or "reference_forward".
        source_name: String,
        image: usize,
        class: usize,
        value: f32,
    },
    #[error(
        "parity with {reference} is worse than the tolerance: max |diff| {max_abs_diff:e} = \
         {max_rel_diff:e} of the logit scale {logit_scale} (at most {tol_rel:e}), top-1 \
         agreement {agreement:.4} (at least {tol_top1}; disagreeing images: {disagreeing:?}); \
         the numbers are in {report}",
        reference = .parity.reference,
        max_abs_diff = .parity.max_abs_diff,
        max_rel_diff = .parity.max_rel_diff,
        logit_scale = .parity.logit_scale,
        tol_rel = .tolerance.max_rel_diff,
        agreement = .parity.top1_agreement,
        tol_top1 = .tolerance.min_top1_agreement,
        disagreeing = .parity.top1_disagreements,
        report = .report.display()
    )]
    Parity {
        parity: Box<Parity>,
        tolerance: ParityTolerance,
        /// deploy.json, written before the error.
        report: PathBuf,
    },
    #[error(
        "board {board} is a real board: running needs probe-rs (`cargo install probe-rs-tools`) \
         and the board attached through a debug probe; the firmware is built: {elf}",
        elf = .elf.display()
    )]
    ProbeNeeded { board: String, elf: PathBuf },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DeployError + '_ {
    move |source| DeployError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The marker file that says a folder holds a firmware written by [`deploy`].
const MARKER_FILE: &str = ".dnal-firmware";

/// The environment variable naming a cargo target folder that every firmware and profile
/// build shares when the caller names none: cortex-m-rt and friends then build once, not once
/// per firmware folder. The project's own `.cargo/config.toml` sets it for its tests.
pub const SHARED_TARGET_ENV: &str = "DNAL_FIRMWARE_TARGET_DIR";

/// The folder cargo builds a firmware crate into when the caller names none: the shared one
/// of [`SHARED_TARGET_ENV`], else `own`, the crate's own `target/` (as `cargo build` in the
/// crate's folder would).
pub(crate) fn default_target_dir(own: PathBuf) -> PathBuf {
    std::env::var_os(SHARED_TARGET_ENV)
        .filter(|v| !v.is_empty())
        .map_or(own, PathBuf::from)
}

/// The folder cargo builds a firmware crate in `crate_dir` into: the request's, else the
/// default one.
fn firmware_target_dir(req: &DeployRequest, crate_dir: &Path) -> PathBuf {
    req.firmware_target_dir
        .clone()
        .unwrap_or_else(|| default_target_dir(crate_dir.join("target")))
}

/// Generates, builds and (with `run`) runs a firmware for the export in `req.export_dir`;
/// writes `out_dir/deploy.json`.
pub fn deploy(req: &DeployRequest) -> Result<DeployReport, DeployError> {
    // The board first: a misspelt name is refused before the export is read.
    deploy_board(&req.board)?;
    deploy_loaded(&AnyExport::load(&req.export_dir)?, req)
}

/// The board named `name`, or the error that lists the known ones: what [`deploy`] checks
/// first, for callers that want to refuse a misspelt board before work of their own.
pub fn deploy_board(name: &str) -> Result<&'static Board, DeployError> {
    board::board(name).ok_or_else(|| DeployError::UnknownBoard {
        name: name.to_string(),
        known: board::board_names().join(", "),
    })
}

/// [`deploy`] for an export already loaded (and validated) from `req.export_dir`, which the
/// report names.
pub fn deploy_loaded<'a>(
    network: impl Into<Network<'a>>,
    req: &DeployRequest,
) -> Result<DeployReport, DeployError> {
    let export = network.into();
    let board = deploy_board(&req.board)?;
    let input_len = export.input_len();
    if let Some((i, img)) = req
        .images
        .iter()
        .enumerate()
        .find(|(_, im)| im.len() != input_len)
    {
        return Err(DeployError::Images(format!(
            "image {i} has {} values, model {} takes {} ({})",
            img.len(),
            export.arch().name,
            input_len,
            export.arch().input
        )));
    }
    // A non-finite value would be written as `inf`/`NaN`, which is not Rust.
    for (i, img) in req.images.iter().enumerate() {
        if let Some((j, v)) = img.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(DeployError::Images(format!(
                "image {i} holds {v} at value {j}; images must be finite (check the \
                 normalisation)"
            )));
        }
    }
    let n_images = if req.images.is_empty() {
        SYNTHETIC_IMAGES
    } else {
        req.images.len()
    };
    if let Some(refs) = &req.reference_logits
        && (refs.len() != n_images || refs.iter().any(|r| r.len() != export.output_len()))
    {
        return Err(DeployError::Images(format!(
            "reference logits: {} rows for {} images, each must hold {} values",
            refs.len(),
            n_images,
            export.output_len()
        )));
    }

    // Refuse a model that cannot fit before anything is written, built or allocated per
    // input (a huge input's synthetic images alone could take gigabytes).
    let summary = export.summary();
    let simd = int8_simd(board, export, req)?;
    let plan = export.plan(simd);
    let value_bytes = export.value_bytes();
    let weights_bytes = export.weights_bytes();
    let images_bytes = (n_images as u64)
        .saturating_mul(input_len as u64)
        .saturating_mul(value_bytes);
    let arena_bytes = (plan.arena_len as u64).saturating_mul(value_bytes);
    check_budget(
        board,
        "flash",
        weights_bytes
            .saturating_add(images_bytes)
            .saturating_add(board.code_allowance()),
        board.flash_bytes,
        format!(
            "weights {weights_bytes} + {n_images} test images of {} values: {images_bytes} + \
             about {} of code",
            export.arch().input,
            board.code_allowance()
        ),
    )?;
    check_budget(
        board,
        "RAM",
        arena_bytes.saturating_add(board.stack_allowance()),
        board.ram_bytes,
        format!(
            "activation arena {arena_bytes} + about {} of stack{}",
            board.stack_allowance(),
            if simd.winograd() {
                let direct = (export.plan(simd.with_winograd(false)).arena_len as u64)
                    .saturating_mul(value_bytes);
                format!(
                    "; the arena holds Winograd's transforms, and is {direct} bytes with the \
                     3x3 convolutions run directly"
                )
            } else {
                String::new()
            }
        ),
    )?;
    let images = if req.images.is_empty() {
        synthetic_images(input_len, SYNTHETIC_IMAGES)
    } else {
        req.images.clone()
    };

    // Write and build in a temporary folder beside out_dir; move it into place only when the
    // build succeeded and fits, so out_dir never holds a half-made firmware.
    let out_dir = absolute(&req.out_dir)?;
    if out_dir.exists() {
        let is_ours = out_dir.join(MARKER_FILE).exists();
        let is_empty = fs::read_dir(&out_dir)
            .map_err(io_err(&out_dir))?
            .next()
            .is_none();
        if !is_ours && !is_empty {
            return Err(DeployError::OutDir {
                path: out_dir,
                reason: "exists and is not a dnal firmware folder; refusing to replace it".into(),
            });
        }
    }
    let parent = out_dir.parent().unwrap_or(Path::new("/")).to_path_buf();
    fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let stem = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "firmware".into());
    let tmp = dnal_export::temporary_path(&parent.join(&stem));
    let _ = fs::remove_dir_all(&tmp);
    // An earlier firmware's own target folder comes along: a redeploy rebuilds only what
    // changed. (Only a cache: if the move fails, the build starts from scratch.)
    let earlier_target = out_dir.join("target");
    if firmware_target_dir(req, &out_dir) == out_dir.join("target")
        && out_dir.join(MARKER_FILE).exists()
        && earlier_target.is_dir()
    {
        let _ =
            fs::create_dir_all(&tmp).and_then(|()| fs::rename(&earlier_target, tmp.join("target")));
    }
    let built = build_in(&tmp, export, board, req, &images, &out_dir);
    let (package, elf_built, sizes) = match built {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out_dir.exists() {
        fs::remove_dir_all(&out_dir).map_err(io_err(&out_dir))?;
    }
    fs::rename(&tmp, &out_dir).map_err(io_err(&out_dir))?;
    // A build into the crate's own target folder moved with it.
    let target_dir = firmware_target_dir(req, &out_dir);
    let elf_built = match elf_built.strip_prefix(&tmp) {
        Ok(rel) => out_dir.join(rel),
        Err(_) => elf_built,
    };
    let elf = out_dir.join(format!("{package}.elf"));
    fs::copy(&elf_built, &elf).map_err(io_err(&elf))?;

    let mut report = DeployReport {
        board: board.name.into(),
        target: board.target.unwrap_or("host").into(),
        cpu: board.cpu.into(),
        model: export.arch().name.clone(),
        precision: export.precision(),
        export_dir: req.export_dir.clone(),
        firmware_dir: out_dir.clone(),
        elf: elf.clone(),
        flash_bytes: sizes.flash_bytes,
        ram_bytes: sizes.ram_bytes,
        flash_budget_bytes: board.flash_bytes,
        ram_budget_bytes: board.ram_bytes,
        stack_bytes: None,
        weights_bytes,
        images_bytes,
        arena_bytes,
        arena_lower_bound_bytes: plan.lower_bound as u64 * value_bytes,
        macs: summary.macs,
        params: summary.params,
        cost: None,
        parity: None,
        logits: Vec::new(),
        prediction: None,
        f32_agreement: None,
        winograd: req.winograd,
    };
    if req.run {
        if let Runner::ProbeRs { .. } = board.runner
            && which("probe-rs").is_none()
        {
            write_report(&out_dir, &report)?;
            return Err(DeployError::ProbeNeeded {
                board: board.name.into(),
                elf,
            });
        }
        let plugin = if board.cost_unit == CostUnit::Instructions {
            Some(build_insn_count_plugin(&target_dir)?)
        } else {
            None
        };
        let mut outputs = Vec::new();
        for run_index in 0..req.runs.max(1) {
            let run_dir = out_dir.join("run").join(run_index.to_string());
            fs::create_dir_all(&run_dir).map_err(io_err(&run_dir))?;
            let output = run::run_firmware(
                board,
                &elf,
                plugin.as_deref(),
                &run_dir,
                req.run_timeout,
                images.len(),
                summary.layers.len(),
            )?;
            outputs.push(output);
        }
        let first = &outputs[0];
        report.stack_bytes = Some(first.stack_bytes);
        report.logits = first
            .logit_bits
            .iter()
            .map(|row| row.iter().map(|b| export.decode_logit(*b)).collect())
            .collect();
        report.cost = Some(cost_of(board, summary, &outputs));
        let (reference, refs) = match (&req.reference_logits, export) {
            (Some(r), Network::F32(_)) => (req.reference_name.as_str(), r.clone()),
            (_, Network::F32(_)) => ("reference_forward", export.reference_logits(&images)),
            (_, Network::Int8(_)) => ("int8 reference_forward", export.reference_logits(&images)),
        };
        // int8 is integer arithmetic: the firmware must give the reference's codes exactly.
        let tolerance = match export {
            Network::F32(_) => req.parity_tolerance,
            Network::Int8(_) => ParityTolerance::EXACT,
        };
        let checked = check_parity(reference, &report.logits, &refs, &tolerance);
        // deploy.json first, so that the user sees the numbers behind an error.
        if let Ok(p) | Err(ParityFailure::Tolerance(p)) = &checked {
            report.parity = Some(p.clone());
        }
        write_report(&out_dir, &report)?;
        return match checked {
            Ok(_) => Ok(report),
            Err(ParityFailure::NonFinite(e)) => Err(e),
            Err(ParityFailure::Tolerance(parity)) => Err(DeployError::Parity {
                parity: Box::new(parity),
                tolerance,
                report: out_dir.join("deploy.json"),
            }),
        };
    }
    write_report(&out_dir, &report)?;
    Ok(report)
}

/// Images used when the request gives none.
const SYNTHETIC_IMAGES: usize = 2;

pub(crate) fn check_budget(
    board: &Board,
    memory: &'static str,
    needed: u64,
    available: u64,
    detail: String,
) -> Result<(), DeployError> {
    if needed > available {
        return Err(DeployError::OverBudget {
            board: board.name.into(),
            memory,
            needed,
            available,
            detail,
        });
    }
    Ok(())
}

/// The int8 kernels the firmware of `export` runs on `board`: the board's, by Winograd where
/// `req` asks for it and they can.
fn int8_simd(
    board: &Board,
    export: Network<'_>,
    req: &DeployRequest,
) -> Result<Int8Simd, DeployError> {
    if req.winograd
        && let Some(reason) = board.winograd_refusal(export.precision())
    {
        let fix = match export.precision() {
            Precision::Int8 => String::new(),
            Precision::F32 => format!(
                " ({}: quantise it first, `dnal quantize`)",
                req.export_dir.display()
            ),
        };
        return Err(DeployError::NoWinograd(format!("{reason}{fix}")));
    }
    Ok(board.int8_simd().with_winograd(req.winograd))
}

/// Writes the crate into `dir`, builds it and checks its sizes against the budget.
fn build_in(
    dir: &Path,
    export: Network<'_>,
    board: &Board,
    req: &DeployRequest,
    images: &[Vec<f32>],
    out_dir: &Path,
) -> Result<(String, PathBuf, elf::Sizes), DeployError> {
    let package = package_name("dnal-fw", &export.arch().name, board.name, out_dir);
    let mut options = FirmwareOptions::new(&package, images.to_vec());
    options.winograd = req.winograd;
    codegen::write_firmware_crate(export, board, &options, dir)?;
    let marker = dir.join(MARKER_FILE);
    fs::write(&marker, "written by dnal-firmware deploy\n").map_err(io_err(&marker))?;

    let target_dir = firmware_target_dir(req, dir);
    cargo_build(dir, board, &target_dir, out_dir, &[])?;
    let elf_path = elf_path(&target_dir, board, &package);
    let sizes = elf::sizes(&elf_path).map_err(DeployError::Run)?;
    check_budget(
        board,
        "flash",
        sizes.flash_bytes,
        board.flash_bytes,
        "measured in the built ELF".into(),
    )?;
    check_budget(
        board,
        "RAM",
        sizes.ram_bytes,
        board.ram_bytes,
        "static RAM measured in the built ELF, before any stack".into(),
    )?;
    Ok((package, elf_path, sizes))
}

/// Builds the firmware crate in `dir` (release) into `target_dir`; `bins` limits the build
/// to those binaries (empty: all). Errors name `report_dir`, where the user finds the crate.
pub(crate) fn cargo_build(
    dir: &Path,
    board: &Board,
    target_dir: &Path,
    report_dir: &Path,
    bins: &[String],
) -> Result<(), DeployError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--release"])
        .env("CARGO_TARGET_DIR", target_dir)
        // The board's flags live in the crate's .cargo/config.toml; flags from the caller's
        // environment would replace them.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for bin in bins {
        cmd.args(["--bin", bin]);
    }
    let output = cmd.output().map_err(|e| DeployError::ToolMissing {
        tool: "cargo".into(),
        hint: e.to_string(),
    })?;
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    let _ = fs::write(dir.join("build.log"), &log);
    if !output.status.success() {
        if let Some(e) = link_overflow(board, &log) {
            return Err(e);
        }
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        return Err(DeployError::Build {
            dir: report_dir.to_path_buf(),
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}

/// Where cargo puts binary `bin` built for `board` in `target_dir`.
pub(crate) fn elf_path(target_dir: &Path, board: &Board, bin: &str) -> PathBuf {
    match board.target {
        Some(t) => target_dir.join(t).join("release").join(bin),
        None => target_dir.join("release").join(bin),
    }
}

/// The linker's "region overflowed" message as a budget error.
fn link_overflow(board: &Board, log: &str) -> Option<DeployError> {
    let line = log
        .lines()
        .find(|l| l.contains("overflowed by") || l.contains("will not fit in region"))?;
    let memory = if line.contains("FLASH") {
        "flash"
    } else {
        "RAM"
    };
    let over: u64 = line
        .split("overflowed by")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let available = if memory == "flash" {
        board.flash_bytes
    } else {
        board.ram_bytes
    };
    Some(DeployError::OverBudget {
        board: board.name.into(),
        memory,
        needed: available + over,
        available,
        detail: format!("the linker says: {}", line.trim()),
    })
}

/// ASCII lower case, other characters as `-`, at most 24 characters: a piece of a cargo
/// package or folder name.
pub(crate) fn clean_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(24);
    out.trim_matches('-').to_string()
}

/// A cargo package name unique to the model, the board and the crate's folder (`prefix` says
/// what builds it), so that crates built into the shared target directory never overwrite
/// each other's binaries.
pub(crate) fn package_name(prefix: &str, model: &str, board: &str, dir: &Path) -> String {
    // FNV-1a of the folder: stable across runs and processes.
    let mut hash: u32 = 0x811c_9dc5;
    for b in dir.to_string_lossy().bytes() {
        hash = (hash ^ b as u32).wrapping_mul(0x0100_0193);
    }
    format!(
        "{prefix}-{}-{}-{hash:08x}",
        clean_name(model),
        clean_name(board)
    )
}

pub(crate) fn absolute(path: &Path) -> Result<PathBuf, DeployError> {
    std::path::absolute(path).map_err(io_err(path))
}

/// The path of `tool` on `PATH`, if any.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

impl DeployReport {
    /// Writes the report to `out_dir/deploy.json` again (after a caller added to it).
    pub fn write(&self, out_dir: &Path) -> Result<(), DeployError> {
        write_report(out_dir, self)
    }
}

fn write_report(out_dir: &Path, report: &DeployReport) -> Result<(), DeployError> {
    let path = out_dir.join("deploy.json");
    let mut json = serde_json::to_vec_pretty(report).expect("the report serialises");
    json.push(b'\n');
    dnal_export::write_atomically(&path, &json).map_err(|e| DeployError::Io {
        path,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Deterministic pseudo-random images in [-1, 1) when the caller gives none.
pub fn synthetic_images(input_len: usize, count: usize) -> Vec<Vec<f32>> {
    let mut state: u32 = 0x1234_5678;
    (0..count)
        .map(|_| {
            (0..input_len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
                })
                .collect()
        })
        .collect()
}

fn cost_of(board: &Board, summary: &dnal_export::ArchSummary, runs: &[RunOutput]) -> Cost {
    let per_image_runs: Vec<Vec<u64>> = runs.iter().map(|r| r.per_image.clone()).collect();
    let first = &per_image_runs[0];
    let per_inference = first.iter().sum::<u64>() as f64 / first.len().max(1) as f64;
    let per_layer = if runs[0].per_layer.is_empty() {
        Vec::new()
    } else {
        summary
            .layers
            .iter()
            .enumerate()
            .map(|(j, l)| LayerCost {
                name: l.name.clone(),
                op: l.op.clone(),
                macs: l.macs,
                cost: runs[0].per_layer.iter().map(|img| img[j]).sum::<u64>() as f64
                    / runs[0].per_layer.len().max(1) as f64,
            })
            .collect()
    };
    Cost {
        unit: board.cost_unit.name().into(),
        per_inference,
        per_mac: per_inference / summary.macs.max(1) as f64,
        repeat_runs_identical: (per_image_runs.len() > 1)
            .then(|| per_image_runs.iter().all(|r| r == first)),
        per_image_runs,
        per_layer,
    }
}

/// Why [`check_parity`] failed.
#[derive(Debug)]
pub enum ParityFailure {
    /// A logit of the firmware or the reference is NaN or infinite.
    NonFinite(DeployError),
    /// The logits differ by more than the tolerance (the measured parity).
    Tolerance(Parity),
}

/// Compares firmware logits `got` with reference logits `want` (one row per image):
/// non-finite logits on either side are an error naming the image; otherwise the parity,
/// an error when it is worse than `tolerance`.
pub fn check_parity(
    reference: &str,
    got: &[Vec<f32>],
    want: &[Vec<f32>],
    tolerance: &ParityTolerance,
) -> Result<Parity, ParityFailure> {
    for (source_name, rows) in [("firmware", got), (reference, want)] {
        for (image, row) in rows.iter().enumerate() {
            if let Some((class, &value)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ParityFailure::NonFinite(DeployError::NonFiniteLogits {
                    source_name: source_name.into(),
                    image,
                    class,
                    value,
                }));
            }
        }
    }
    if got.len() != want.len() || got.iter().zip(want).any(|(g, w)| g.len() != w.len()) {
        return Err(ParityFailure::NonFinite(DeployError::Run(format!(
            "the firmware gave {} rows of logits for {} reference rows (or rows of other \
             lengths)",
            got.len(),
            want.len()
        ))));
    }
    let logit_scale = want.iter().flatten().fold(1.0f32, |m, v| m.max(v.abs()));
    let allowed = tolerance.max_rel_diff * logit_scale;
    let mut max_abs_diff = 0.0f32;
    let mut top1_disagreements = Vec::new();
    for (image, (g, w)) in got.iter().zip(want).enumerate() {
        for (a, b) in g.iter().zip(w) {
            max_abs_diff = max_abs_diff.max((a - b).abs());
        }
        let (pick, best) = (top1_class(g), top1_class(w));
        // A near-tie in the reference may fall either way.
        if !w.is_empty() && pick != best && w[best] - w[pick] > allowed {
            top1_disagreements.push(image);
        }
    }
    let images = got.len();
    let top1_agreement = (images - top1_disagreements.len()) as f64 / images.max(1) as f64;
    let max_rel_diff = max_abs_diff / logit_scale;
    let within_tolerance =
        max_rel_diff <= tolerance.max_rel_diff && top1_agreement >= tolerance.min_top1_agreement;
    let parity = Parity {
        reference: reference.into(),
        images,
        max_abs_diff,
        top1_agreement,
        logit_scale,
        max_rel_diff,
        top1_disagreements,
        tolerance: Some(*tolerance),
        within_tolerance,
    };
    if within_tolerance {
        Ok(parity)
    } else {
        Err(ParityFailure::Tolerance(parity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol() -> ParityTolerance {
        DEFAULT_PARITY_TOLERANCE
    }

    #[test]
    fn parity_within_rounding_passes() {
        let want = vec![vec![1.0, 9.5, -3.0], vec![4.0, 0.0, 2.0]];
        let got = vec![vec![1.000_01, 9.499_99, -3.0], vec![4.0, 1e-6, 2.0]];
        let p = check_parity("host", &got, &want, &tol()).unwrap();
        assert!(p.within_tolerance && p.top1_agreement == 1.0, "{p:?}");
        assert_eq!(p.logit_scale, 9.5);
        assert!(p.max_abs_diff < 2e-5, "{p:?}");
        // A reference tie within rounding may fall either way.
        let want = vec![vec![5.0, 5.000_001]];
        let got = vec![vec![5.000_001, 5.0]];
        assert!(check_parity("host", &got, &want, &tol()).is_ok());
    }

    #[test]
    fn parity_worse_than_the_tolerance_is_an_error() {
        let want = vec![vec![1.0, 2.0], vec![3.0, 0.0]];
        // Off by 0.1 on a scale of 3: 3.3e-2 relative.
        let got = vec![vec![1.1, 2.0], vec![3.0, 0.0]];
        match check_parity("host", &got, &want, &tol()) {
            Err(ParityFailure::Tolerance(p)) => {
                assert!(!p.within_tolerance);
                assert!((p.max_rel_diff - 0.1 / 3.0).abs() < 1e-6, "{p:?}");
            }
            other => panic!("expected a tolerance failure, got {other:?}"),
        }
        // The top-1 flips on image 1 although the logits are close to each other.
        let got = vec![vec![1.0, 2.0], vec![0.0, 3.0]];
        let Err(ParityFailure::Tolerance(p)) = check_parity("host", &got, &want, &tol()) else {
            panic!("expected a tolerance failure");
        };
        assert_eq!(p.top1_disagreements, [1]);
        assert_eq!(p.top1_agreement, 0.5);
        let e = DeployError::Parity {
            parity: Box::new(p),
            tolerance: tol(),
            report: "fw/deploy.json".into(),
        };
        let text = e.to_string();
        assert!(text.contains("worse than the tolerance") && text.contains("fw/deploy.json"));
        // A looser stated tolerance accepts it.
        let loose = ParityTolerance {
            max_rel_diff: 2.0,
            min_top1_agreement: 0.5,
        };
        assert!(check_parity("host", &got, &want, &loose).is_ok());
    }

    #[test]
    fn non_finite_logits_are_an_error_naming_the_image() {
        let want = vec![vec![1.0, 2.0], vec![3.0, 0.0]];
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let got = vec![vec![1.0, 2.0], vec![3.0, bad]];
            match check_parity("host", &got, &want, &tol()) {
                Err(ParityFailure::NonFinite(DeployError::NonFiniteLogits {
                    source_name,
                    image: 1,
                    class: 1,
                    value,
                })) => {
                    assert_eq!(source_name, "firmware");
                    assert_eq!(value.is_nan(), bad.is_nan());
                }
                other => panic!("expected NonFiniteLogits, got {other:?}"),
            }
            // The same in the reference.
            let Err(ParityFailure::NonFinite(e)) =
                check_parity("reference_forward", &want, &got, &tol())
            else {
                panic!("expected NonFiniteLogits");
            };
            let text = e.to_string();
            assert!(
                text.contains("reference_forward logits of image 1"),
                "{text}"
            );
        }
        // All-NaN rows used to agree ("100%"): NaN never ranks as a hit.
        let nan = vec![vec![f32::NAN, f32::NAN]];
        assert!(check_parity("host", &nan, &nan, &tol()).is_err());
    }
}
