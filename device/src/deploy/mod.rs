//! Deploying a model: generate the firmware crate, build it for a board, run it (QEMU, a real
//! board through probe-rs, or natively), and report sizes, cost and parity in `deploy.json`.
//!
//! All generated firmware shares one cargo target directory (`<workspace target>/dnal-firmware`
//! by default), so cortex-m-rt and friends build once.

pub mod elf;
mod run;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::board::{self, Board, CostUnit, Runner};
use crate::codegen::{self, CodegenError, FirmwareOptions};
use crate::export::{Export, ExportError};

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
    /// given, else against [`crate::reference_forward`].
    pub reference_logits: Option<Vec<Vec<f32>>>,
    /// How many times to run the firmware (2 or more checks that the cost repeats exactly).
    pub runs: usize,
    /// Cargo target directory for firmware builds (default: [`default_firmware_target_dir`]).
    pub firmware_target_dir: Option<PathBuf>,
    /// Path of dnal-device for the generated crate (default: this crate's source folder).
    pub device_path: Option<PathBuf>,
    /// Longest a single firmware run may take.
    pub run_timeout: Duration,
}

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
            runs: 1,
            firmware_target_dir: None,
            device_path: None,
            run_timeout: Duration::from_secs(600),
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
    /// Logits of each image from the firmware; empty when not run.
    pub logits: Vec<Vec<f32>>,
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
    /// "host" (the logits the caller passed) or "reference_forward" (this crate's).
    pub reference: String,
    pub images: usize,
    pub max_abs_diff: f32,
    /// Fraction of images whose arg-max class agrees.
    pub top1_agreement: f64,
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

/// `<workspace target dir>/dnal-firmware`: `CARGO_TARGET_DIR` when set, else the `target`
/// folder of the workspace this crate was built in.
pub fn default_firmware_target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    base.join("dnal-firmware")
}

/// Generates, builds and (with `run`) runs a firmware; writes `out_dir/deploy.json`.
pub fn deploy(req: &DeployRequest) -> Result<DeployReport, DeployError> {
    let board = board::board(&req.board).ok_or_else(|| DeployError::UnknownBoard {
        name: req.board.clone(),
        known: board::board_names().join(", "),
    })?;
    let export = Export::load(&req.export_dir)?;
    let input_len = export.input_len();
    let images = if req.images.is_empty() {
        synthetic_images(input_len, 2)
    } else {
        req.images.clone()
    };
    if let Some((i, img)) = images
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
    if let Some(refs) = &req.reference_logits
        && (refs.len() != images.len() || refs.iter().any(|r| r.len() != export.output_len()))
    {
        return Err(DeployError::Images(format!(
            "reference logits: {} rows for {} images, each must hold {} values",
            refs.len(),
            images.len(),
            export.output_len()
        )));
    }

    // Refuse a model that cannot fit before anything is written or built.
    let summary = export.summary();
    let plan = codegen::plan_for(&export);
    let weights_bytes = summary.params * 4;
    let images_bytes = (images.len() * input_len * 4) as u64;
    let arena_bytes = plan.arena_len as u64 * 4;
    check_budget(
        board,
        "flash",
        weights_bytes + images_bytes + board.code_allowance(),
        board.flash_bytes,
        format!(
            "weights {weights_bytes} + test images {images_bytes} + about {} of code",
            board.code_allowance()
        ),
    )?;
    check_budget(
        board,
        "RAM",
        arena_bytes + board.stack_allowance(),
        board.ram_bytes,
        format!(
            "activation arena {arena_bytes} + about {} of stack",
            board.stack_allowance()
        ),
    )?;

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
    static NEXT_TMP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let serial = NEXT_TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = parent.join(format!(".{stem}.tmp-{}-{serial}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let built = build_in(&tmp, &export, board, req, &images, &out_dir);
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
    let elf = out_dir.join(format!("{package}.elf"));
    fs::copy(&elf_built, &elf).map_err(io_err(&elf))?;

    let mut report = DeployReport {
        board: board.name.into(),
        target: board.target.unwrap_or("host").into(),
        cpu: board.cpu.into(),
        model: export.arch().name.clone(),
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
        arena_lower_bound_bytes: plan.lower_bound as u64 * 4,
        macs: summary.macs,
        params: summary.params,
        cost: None,
        parity: None,
        logits: Vec::new(),
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
            Some(build_insn_count_plugin(&firmware_target_dir(req))?)
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
        report.logits = first.logits.clone();
        report.cost = Some(cost_of(board, summary, &outputs));
        let (reference, refs) = match &req.reference_logits {
            Some(r) => ("host", r.clone()),
            None => (
                "reference_forward",
                images
                    .iter()
                    .map(|im| crate::reference_forward(&export, im))
                    .collect(),
            ),
        };
        report.parity = Some(parity(reference, &first.logits, &refs));
    }
    write_report(&out_dir, &report)?;
    Ok(report)
}

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

fn firmware_target_dir(req: &DeployRequest) -> PathBuf {
    req.firmware_target_dir
        .clone()
        .unwrap_or_else(default_firmware_target_dir)
}

/// Writes the crate into `dir`, builds it and checks its sizes against the budget.
fn build_in(
    dir: &Path,
    export: &Export,
    board: &Board,
    req: &DeployRequest,
    images: &[Vec<f32>],
    out_dir: &Path,
) -> Result<(String, PathBuf, elf::Sizes), DeployError> {
    let package = package_name("dnal-fw", &export.arch().name, board.name, out_dir);
    let mut options = FirmwareOptions::new(&package, images.to_vec());
    if let Some(p) = &req.device_path {
        options.device_path = p.clone();
    }
    codegen::write_firmware_crate(export, board, &options, dir)?;
    let marker = dir.join(MARKER_FILE);
    fs::write(&marker, "written by dnal-device deploy\n").map_err(io_err(&marker))?;

    let target_dir = firmware_target_dir(req);
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

fn write_report(out_dir: &Path, report: &DeployReport) -> Result<(), DeployError> {
    let path = out_dir.join("deploy.json");
    let mut json = serde_json::to_vec_pretty(report).expect("the report serialises");
    json.push(b'\n');
    crate::export::write_atomically(&path, &json).map_err(|e| DeployError::Io {
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

fn cost_of(board: &Board, summary: &crate::export::ArchSummary, runs: &[RunOutput]) -> Cost {
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

fn parity(reference: &str, got: &[Vec<f32>], want: &[Vec<f32>]) -> Parity {
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
                if x > best.1 { (i, x) } else { best }
            })
            .0
    };
    let mut max_abs_diff = 0.0f32;
    let mut agree = 0;
    for (g, w) in got.iter().zip(want) {
        for (a, b) in g.iter().zip(w) {
            let d = (a - b).abs();
            max_abs_diff = if d.is_nan() {
                f32::INFINITY
            } else {
                max_abs_diff.max(d)
            };
        }
        if argmax(g) == argmax(w) {
            agree += 1;
        }
    }
    Parity {
        reference: reference.into(),
        images: got.len(),
        max_abs_diff,
        top1_agreement: agree as f64 / got.len().max(1) as f64,
    }
}
