//! `profile`: measures every layer of a parent network over a grid of channel counts on a
//! board and returns the latency table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::bench::{self, Bench, BenchCode, Numbers};
use super::grid::{GridOptions, plan_layers};
use super::table::{Calibration, Clock, LatencyTable, LayerLatency, Origin};
use super::{FORMAT, LatencyError, VERSION};
use crate::board::{self, Board, CostUnit, Int8Simd, Runner};
use crate::codegen;
use crate::deploy::{self, DeployError, RawRun};
use dnal_export::{Arch, Precision};

/// Where and how to build and run the benchmarks.
#[derive(Clone, Debug)]
pub struct ProfileOptions {
    /// Where the benchmark crate and the run outputs go (default:
    /// `<system temporary folder>/dnal-profile/<model>-<board>`); replaced on each profile.
    pub work_dir: Option<PathBuf>,
    /// Cargo target directory for the build (default: the shared one of
    /// [`crate::deploy::SHARED_TARGET_ENV`] when set, else `target/` in the work folder, shared
    /// by all of the profile's firmware images and kept for the next profile there).
    pub firmware_target_dir: Option<PathBuf>,
    /// Longest one firmware image may run.
    pub run_timeout: Duration,
    /// Images built and run at once (0: the machine's available parallelism).
    pub jobs: usize,
    /// Also run the parent model whole to measure the per-inference overhead.
    pub calibrate: bool,
    /// The number format of the firmware to measure: f32, or int8 (the int8 kernels, with
    /// the `SMLAD` convolution on a board with the DSP extension).
    pub precision: Precision,
    /// int8 on a board with the DSP extension: measure 3x3 convolutions by Winograd's
    /// F(2x2, 3x3), as `DeployRequest::winograd` deploys them (the table records it).
    pub winograd: bool,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            work_dir: None,
            firmware_target_dir: None,
            run_timeout: Duration::from_secs(600),
            jobs: 0,
            calibrate: true,
            precision: Precision::F32,
            winograd: false,
        }
    }
}

/// The marker file that says a folder holds a benchmark crate written by [`profile`].
const MARKER_FILE: &str = ".dnal-profile";

/// Measures every layer of `arch` (the parent network, unpruned, as exported) on `board` at
/// the channel counts `grid` asks for, and returns the table. Each configuration runs the
/// code a generated model runs for that layer (same kernels, weight layout and
/// specialisation); see `docs/latency-format.md`.
///
/// Real boards (probe-rs) need probe-rs and the board attached; without them the firmware
/// is built and [`LatencyError::ProbeNeeded`] says where.
pub fn profile(
    arch: &Arch,
    board_name: &str,
    grid: &GridOptions,
    options: &ProfileOptions,
) -> Result<LatencyTable, LatencyError> {
    grid.check()?;
    let board = known_board(board_name)?;
    if board.cost_unit == CostUnit::WallNanoseconds {
        return Err(LatencyError::CannotProfile {
            board: board.name.to_string(),
            reason: "it measures wall-clock time, which varies run to run; profile a QEMU \
                     board (instruction counts) or a real board (cycles)"
                .into(),
        });
    }
    if options.winograd
        && let Some(reason) = board.winograd_refusal(options.precision)
    {
        let fix = match options.precision {
            Precision::Int8 => "",
            Precision::F32 => " (profile with --precision int8)",
        };
        return Err(LatencyError::CannotProfile {
            board: board.name.to_string(),
            reason: format!("{reason}{fix}"),
        });
    }
    let simd = board.int8_simd().with_winograd(options.winograd);
    let summary = arch.summary()?;
    let numbers = Numbers {
        precision: options.precision,
        simd,
    };
    let plans = plan_layers(
        arch,
        &summary,
        grid,
        match numbers.precision {
            Precision::Int8 => numbers.simd,
            Precision::F32 => Int8Simd::None,
        },
    );
    let bytes = numbers.value_bytes();

    let mut codes: Vec<BenchCode> = Vec::new();
    for plan in &plans {
        for (in_channels, out_channels) in plan.axes.points() {
            let b = Bench {
                layer: plan.index,
                in_channels,
                out_channels,
            };
            codes.push(bench::bench_code(arch, &summary, plan, &b, numbers)?);
        }
    }

    // What every image holds besides the benchmarks' code: the shared data.
    let weights_len = codes.iter().map(|c| c.weights_len).max().unwrap_or(0);
    let bias_len = codes.iter().map(|c| c.bias_len).max().unwrap_or(0);
    let rq_len = codes.iter().map(|c| c.rq_len).max().unwrap_or(0);
    let input_len = arch.input.len();
    // Weights and the image in the activations' format; biases 4 bytes, requantisation 8.
    let data_bytes = bytes * (weights_len.max(1) + input_len) as u64
        + 4 * bias_len.max(1) as u64
        + 8 * rq_len as u64;
    let fixed_flash = data_bytes + board.code_allowance();
    if fixed_flash >= board.flash_bytes {
        return Err(LatencyError::TooLarge {
            board: board.name.to_string(),
            what: format!(
                "the weights of the largest layer ({} bytes) and the image",
                bytes * weights_len as u64
            ),
            memory: "flash",
            needed: fixed_flash,
            available: board.flash_bytes,
        });
    }
    let ram_for_arena = board.ram_bytes.saturating_sub(board.stack_allowance());
    if let Some(c) = codes
        .iter()
        .find(|c| bytes * c.arena_len as u64 > ram_for_arena)
    {
        return Err(LatencyError::TooLarge {
            board: board.name.to_string(),
            what: format!(
                "layer {} at {} -> {} channels (its input, output and scratch)",
                arch.layers[c.bench.layer].name, c.bench.in_channels, c.bench.out_channels
            ),
            memory: "RAM",
            needed: bytes * c.arena_len as u64 + board.stack_allowance(),
            available: board.ram_bytes,
        });
    }
    let (model_rs, model_weights_rs, model_arena) = bench::model_rs(arch, &summary, numbers)?;
    let calibrate = options.calibrate && bytes * model_arena as u64 <= ram_for_arena;

    let jobs = if options.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        options.jobs
    };
    let work = match &options.work_dir {
        Some(d) => deploy::absolute(d)?,
        None => std::env::temp_dir().join("dnal-profile").join(format!(
            "{}-{}",
            deploy::clean_name(&arch.name),
            board.name
        )),
    };
    let target_dir = options
        .firmware_target_dir
        .clone()
        .unwrap_or_else(|| deploy::default_target_dir(work.join("target")));
    // Two profiles of one model on one board (a search and `dnal profile`, two tests) share
    // the default folder: each holds it for its whole run, the other waits.
    let _held = hold_work_dir(&work)?;
    prepare_work_dir(&work)?;
    let package = deploy::package_name("dnal-prof", &arch.name, board.name, &work);

    bench::write(
        &work,
        "src/weights.rs",
        &bench::weights_rs((weights_len, bias_len, rq_len), input_len, numbers),
    )?;
    bench::write(&work, "src/model.rs", &model_rs)?;
    if let Some(weights) = &model_weights_rs {
        bench::write(&work, "src/model_weights.rs", weights)?;
    }
    bench::write(
        &work,
        "src/main_model.rs",
        &bench::model_main(board, numbers),
    )?;

    // Build; if a benchmark image still overflows flash, split the benchmarks into twice as
    // many images; if the model image does, do without calibration.
    let code_budget = board.flash_bytes - fixed_flash;
    let mut min_chunks = jobs;
    let mut calibrate = calibrate;
    let mut attempts = 0;
    let (chunks, bins) = loop {
        let chunks = bench::plan_chunks(&codes, code_budget, min_chunks);
        let mut bins = Vec::new();
        for (k, members) in chunks.iter().enumerate() {
            let module = format!("bench_c{k}.rs");
            let selected: Vec<&BenchCode> = members.iter().map(|&i| &codes[i]).collect();
            bench::write(
                &work,
                &format!("src/{module}"),
                &codegen::rustfmt(&bench::chunk_rs(
                    k,
                    &selected,
                    (input_len, arch.num_classes),
                    numbers,
                )),
            )?;
            bench::write(
                &work,
                &format!("src/main_c{k}.rs"),
                &bench::bench_main(board, &module),
            )?;
            bins.push((format!("{package}-c{k}"), format!("src/main_c{k}.rs")));
        }
        let model_bin = format!("{package}-model");
        if calibrate {
            bins.push((model_bin.clone(), "src/main_model.rs".to_string()));
        }
        codegen::write_crate_scaffold(
            board,
            &package,
            &format!("Latency benchmarks of `{}`", codegen::inert(&arch.name)),
            &bins,
            &work,
        )?;
        match deploy::cargo_build(&work, board, &target_dir, &work, &[]) {
            Ok(()) => break (chunks, bins),
            Err(DeployError::OverBudget {
                memory: "flash", ..
            }) if attempts < 4 => {
                attempts += 1;
                let log = std::fs::read_to_string(work.join("build.log")).unwrap_or_default();
                if calibrate && log.contains(&format!("(bin \"{model_bin}\")")) {
                    calibrate = false;
                } else if chunks.len() < codes.len() {
                    min_chunks = chunks.len() * 2;
                } else {
                    return Err(LatencyError::Profile(format!(
                        "a benchmark image overflows the flash of {} even with one benchmark \
                         each; see {}",
                        board.name,
                        work.join("build.log").display()
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    let elfs: Vec<PathBuf> = bins
        .iter()
        .map(|(name, _)| deploy::elf_path(&target_dir, board, name))
        .collect();

    if let Runner::ProbeRs { chip } = board.runner
        && deploy::which("probe-rs").is_none()
    {
        return Err(LatencyError::ProbeNeeded {
            board: board.name.to_string(),
            chip: chip.to_string(),
            elfs,
        });
    }
    let plugin = match board.cost_unit {
        CostUnit::Instructions => Some(deploy::build_insn_count_plugin(&target_dir)?),
        _ => None,
    };

    // Run the images, `jobs` at a time.
    let runs = run_all(board, &elfs, plugin.as_deref(), &work, options, jobs)?;
    let mut costs = vec![0.0; codes.len()];
    for (k, members) in chunks.iter().enumerate() {
        let spans = bench_spans(&runs[k], members.len())?;
        // Span 0 is the empty benchmark: what the marks alone cost (0 for QEMU counts).
        for (slot, &i) in members.iter().enumerate() {
            costs[i] = spans[slot + 1].saturating_sub(spans[0]) as f64;
        }
    }
    let in_model = if calibrate {
        Some(model_spans(board, &runs[chunks.len()], arch.layers.len())?)
    } else {
        None
    };

    let mut layers = Vec::with_capacity(plans.len());
    let mut at = 0;
    let mut parent_from_layers = 0.0;
    for plan in &plans {
        let points = plan.axes.points();
        let layer_costs = &costs[at..at + points.len()];
        let info = &summary.layers[plan.index];
        let parent_point = (info.input_shapes[0].channels, info.output.channels);
        let k = points
            .iter()
            .position(|&p| p == parent_point)
            .expect("the grid holds the parent's counts");
        parent_from_layers += layer_costs[k];
        at += points.len();
        layers.push(LayerLatency {
            name: plan.name.clone(),
            structure: plan.structure.clone(),
            grid: plan.axes.with_costs(layer_costs),
            in_parent: in_model.as_ref().map(|m| m[plan.index] as f64),
        });
    }
    let calibration = in_model.as_ref().map(|m| Calibration {
        parent_measured: m.iter().sum::<u64>() as f64,
        parent_from_layers,
    });
    // What a model costs besides its layers measured alone. Never below 0: a model cannot
    // run its layers for less than they cost, so a negative difference is a layer compiled
    // differently in the parent than alone (seen for int8 layers too wide for the SMLAD
    // kernel), which the parent's own counts show but which a pruned network, running
    // other kernels, does not share. It stays visible in `calibration`.
    let overhead = calibration
        .as_ref()
        .map_or(0.0, |c| (c.parent_measured - c.parent_from_layers).max(0.0));

    Ok(LatencyTable {
        overhead,
        calibration,
        precision: options.precision,
        winograd: numbers.simd.winograd(),
        code: Some(crate::codegen::code_stamp().to_string()),
        ..table_for(
            board,
            arch,
            grid,
            measured_sentence(board, codes.len(), chunks.len(), calibrate),
            layers,
        )
    })
}

/// The board called `name`, or an error listing the boards there are.
fn known_board(name: &str) -> Result<&'static Board, LatencyError> {
    board::board(name).ok_or_else(|| LatencyError::UnknownBoard {
        name: name.to_string(),
        known: board::board_names().join(", "),
    })
}

/// A table of `layers` of `arch` on `board`, in the board's unit and at its clock, without
/// an overhead.
fn table_for(
    board: &Board,
    arch: &Arch,
    grid: &GridOptions,
    measured: String,
    layers: Vec<LayerLatency>,
) -> LatencyTable {
    LatencyTable {
        format: FORMAT.to_string(),
        version: VERSION,
        board: board.name.to_string(),
        cpu: board.cpu.to_string(),
        unit: board.cost_unit.name().to_string(),
        measured,
        clock: Clock {
            hz: board.clock_hz as f64,
            cycles_per_unit: 1.0,
            assumption: board.clock_note.to_string(),
        },
        model: arch.name.clone(),
        precision: Precision::F32,
        winograd: false,
        code: None,
        input: arch.input,
        overhead: 0.0,
        calibration: None,
        grid_options: grid.clone(),
        layers,
        origin: Origin::default(),
    }
}

/// A table over the grid [`profile`] would measure, with costs from a function (see
/// `synth::modelled_latency_table`).
pub(crate) fn modelled_table(
    arch: &Arch,
    board_name: &str,
    grid: &GridOptions,
    cost: impl Fn(&super::LayerStructure, usize, usize) -> f64,
) -> Result<LatencyTable, LatencyError> {
    grid.check()?;
    let board = known_board(board_name)?;
    let summary = arch.summary()?;
    let layers = plan_layers(arch, &summary, grid, Int8Simd::None)
        .into_iter()
        .map(|plan| {
            let costs: Vec<f64> = plan
                .axes
                .points()
                .into_iter()
                .map(|(i, o)| cost(&plan.structure, i, o))
                .collect();
            LayerLatency {
                name: plan.name.clone(),
                grid: plan.axes.with_costs(&costs),
                structure: plan.structure,
                in_parent: None,
            }
        })
        .collect();
    Ok(table_for(
        board,
        arch,
        grid,
        "modelled: computed from a cost function, not measured".to_string(),
        layers,
    ))
}

/// Runs every image (benchmark images, then the model) `jobs` at a time.
fn run_all(
    board: &Board,
    elfs: &[PathBuf],
    plugin: Option<&Path>,
    work: &Path,
    options: &ProfileOptions,
    jobs: usize,
) -> Result<Vec<RawRun>, LatencyError> {
    let mut runs: Vec<Option<Result<RawRun, DeployError>>> =
        (0..elfs.len()).map(|_| None).collect();
    for batch in (0..elfs.len()).collect::<Vec<_>>().chunks(jobs.max(1)) {
        let results: Vec<(usize, Result<RawRun, DeployError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|&i| {
                    let elf = &elfs[i];
                    s.spawn(move || {
                        let run_dir = work.join("run").join(i.to_string());
                        let result = std::fs::create_dir_all(&run_dir)
                            .map_err(deploy::io_err(&run_dir))
                            .and_then(|()| {
                                deploy::run_raw(board, elf, plugin, &run_dir, options.run_timeout)
                            });
                        (i, result)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a run thread does not panic"))
                .collect()
        });
        for (i, r) in results {
            runs[i] = Some(r);
        }
    }
    runs.into_iter()
        .map(|r| {
            let run = r.expect("every image ran")?;
            if !run.completed() {
                return Err(run
                    .failure(format!(
                        "a benchmark image on {} did not complete",
                        board.name
                    ))
                    .into());
            }
            Ok(run)
        })
        .collect()
}

/// The cost between each pair of marks of a benchmark image: `count + 1` spans (the empty
/// benchmark first).
fn bench_spans(run: &RawRun, count: usize) -> Result<Vec<u64>, LatencyError> {
    let spans = match &run.marks {
        Some(marks) => {
            let m = parse_marks(marks).map_err(|why| run.failure(why))?;
            if m.len() != 2 * (count + 1) {
                return Err(run
                    .failure(format!(
                        "the plugin saw {} markers, expected {} (2 per benchmark, {count} + 1 empty)",
                        m.len(),
                        2 * (count + 1)
                    ))
                    .into());
            }
            // A marker's count excludes the marker itself.
            m.chunks_exact(2)
                .map(|p| p[1].saturating_sub(p[0] + 1))
                .collect()
        }
        None => {
            let mut spans = vec![None; count + 1];
            for line in run.stdout.lines() {
                let Some(rest) = line.find("DNAL bench ").map(|p| &line[p + 11..]) else {
                    continue;
                };
                let mut words = rest.split_whitespace();
                let k: Option<usize> = words.next().and_then(|w| w.parse().ok());
                let v: Option<u64> = words.next().and_then(|w| w.parse().ok());
                if let (Some(k), Some(v)) = (k, v)
                    && k <= count
                {
                    spans[k] = Some(v);
                }
            }
            spans
                .into_iter()
                .enumerate()
                .map(|(k, s)| s.ok_or_else(|| run.failure(format!("no cost for benchmark {k}"))))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(spans)
}

/// The parent model's per-layer costs from its image's run.
fn model_spans(board: &Board, run: &RawRun, layers: usize) -> Result<Vec<u64>, LatencyError> {
    match &run.marks {
        Some(marks) => {
            let m = parse_marks(marks).map_err(|why| run.failure(why))?;
            if m.len() != layers + 1 {
                return Err(run
                    .failure(format!(
                        "the plugin saw {} markers in the model run, expected {}",
                        m.len(),
                        layers + 1
                    ))
                    .into());
            }
            Ok(m.windows(2)
                .map(|w| w[1].saturating_sub(w[0] + 1))
                .collect())
        }
        None => {
            let line = run
                .stdout
                .lines()
                .find_map(|l| l.find("DNAL model ").map(|p| &l[p + 11..]))
                .ok_or_else(|| run.failure(format!("no model cost from {}", board.name)))?;
            let list = line
                .split_once('[')
                .map(|(_, rest)| rest.trim_end().trim_end_matches(']'))
                .unwrap_or("");
            let spans: Vec<u64> = list
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            if spans.len() != layers {
                return Err(run
                    .failure(format!("expected {layers} per-layer cycle counts"))
                    .into());
            }
            Ok(spans)
        }
    }
}

/// The counts the plugin wrote, one per executed marker.
fn parse_marks(marks: &str) -> Result<Vec<u64>, String> {
    marks
        .lines()
        .filter(|l| !l.starts_with("total") && !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse::<u64>()
                .map_err(|e| format!("bad marker count {l:?}: {e}"))
        })
        .collect()
}

fn measured_sentence(board: &Board, configs: usize, images: usize, calibrate: bool) -> String {
    let how = match board.runner {
        Runner::QemuSystem { machine, cpu } => format!(
            "instructions executed between two marker hints around each configuration, counted \
             by the dnal-firmware TCG plugin in {} -machine {machine} -cpu {cpu} (deterministic, \
             one run each)",
            qemu_version("qemu-system-arm")
        ),
        Runner::QemuUser { program, cpu } => format!(
            "instructions executed between two marker hints around each configuration, counted \
             by the dnal-firmware TCG plugin in {} -cpu {cpu} (deterministic, one run each)",
            qemu_version(program)
        ),
        Runner::ProbeRs { chip } => format!(
            "DWT cycles between two reads around each configuration on a {chip} through \
             probe-rs (one run each, less the cost of the reads)"
        ),
        Runner::Native => "wall-clock nanoseconds".to_string(),
    };
    format!(
        "{how}; {configs} configurations (each one layer as the model code generator emits it, \
         with the configuration's channel counts as constants) in {images} firmware images{}",
        if calibrate {
            "; overhead = the parent model run whole minus its layers' configurations"
        } else {
            "; the parent model does not fit the board whole, so the overhead was not measured (0)"
        }
    )
}

/// "QEMU emulator version X" of a QEMU program, or its name when it does not say.
fn qemu_version(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| program.to_string())
}

/// An exclusive lock on `dir` for as long as the returned file is open: a file beside it,
/// `NAME.lock` (inside it, the folder would not be empty for [`prepare_work_dir`]'s check).
/// Blocks while another process or thread holds it.
fn hold_work_dir(dir: &Path) -> Result<std::fs::File, LatencyError> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(LatencyError::WorkDir {
            path: dir.to_path_buf(),
            reason: "has no parent folder to hold its lock file in".into(),
        });
    };
    std::fs::create_dir_all(parent).map_err(deploy::io_err(parent))?;
    let path = parent.join(format!("{}.lock", name.to_string_lossy()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(deploy::io_err(&path))?;
    file.lock().map_err(deploy::io_err(&path))?;
    Ok(file)
}

/// Creates `dir`, or empties one written by an earlier profile; refuses a folder with other
/// contents.
fn prepare_work_dir(dir: &Path) -> Result<(), LatencyError> {
    if dir.exists() {
        let ours = dir.join(MARKER_FILE).exists();
        let empty = std::fs::read_dir(dir)
            .map_err(deploy::io_err(dir))?
            .next()
            .is_none();
        if !ours && !empty {
            return Err(LatencyError::WorkDir {
                path: dir.to_path_buf(),
                reason: "exists and is not a dnal profile folder; refusing to replace it".into(),
            });
        }
        for sub in ["src", "run"] {
            let p = dir.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(deploy::io_err(&p))?;
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(deploy::io_err(dir))?;
    let marker = dir.join(MARKER_FILE);
    std::fs::write(&marker, "written by dnal-firmware latency::profile\n")
        .map_err(deploy::io_err(&marker))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While one profile holds its folder, another cannot take it; once the first is done,
    /// it can, and the folder itself stays empty of the lock (so `prepare_work_dir` takes it).
    #[test]
    fn a_work_dir_is_held_by_one_profile_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("vgg-small-cortex-m7-qemu");
        let held = hold_work_dir(&work).unwrap();
        let other = std::fs::File::open(tmp.path().join("vgg-small-cortex-m7-qemu.lock")).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        prepare_work_dir(&work).unwrap();
        drop(held);
        other.try_lock().unwrap();
    }

    #[test]
    fn marks_parse_and_skip_the_total() {
        assert_eq!(
            parse_marks("10\n11\n20\n31\ntotal 99\n").unwrap(),
            vec![10, 11, 20, 31]
        );
        assert!(parse_marks("x\n").is_err());
    }
}
