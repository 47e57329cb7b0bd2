//! Running a built firmware and reading back what it printed and what the plugin counted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{DeployError, io_err, which};
use crate::board::{Board, Harness, Runner};

const PLUGIN_SOURCE: &str = include_str!("insn_count.c");

/// What one firmware run printed.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutput {
    /// Each image's logits as the harness printed them: bit patterns (f32 bits, or int8
    /// codes' bytes), decoded by `codegen::Network::decode_logit`.
    pub logit_bits: Vec<Vec<u32>>,
    pub stack_bytes: u64,
    /// Cost of each image's inference (instructions, cycles or wall nanoseconds).
    pub per_image: Vec<u64>,
    /// Cost of each layer, per image; empty when the board measures no layers.
    pub per_layer: Vec<Vec<u64>>,
}

/// Compiles the instruction-counting QEMU plugin (once per source version) into
/// `target_dir/plugin/` and returns its path.
pub fn build_insn_count_plugin(target_dir: &Path) -> Result<PathBuf, DeployError> {
    let mut hash: u32 = 0x811c_9dc5;
    for b in PLUGIN_SOURCE.bytes() {
        hash = (hash ^ b as u32).wrapping_mul(0x0100_0193);
    }
    let dir = target_dir.join("plugin");
    let so = dir.join(format!("libdnal_insn_count-{hash:08x}.so"));
    if so.exists() {
        return Ok(so);
    }
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let pid = std::process::id();
    let src = dir.join(format!("insn_count-{pid}.c"));
    let tmp = dir.join(format!("libdnal_insn_count-{pid}.so.tmp"));
    fs::write(&src, PLUGIN_SOURCE).map_err(io_err(&src))?;
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-o"])
        .arg(&tmp)
        .arg(&src)
        .output()
        .map_err(|e| DeployError::ToolMissing {
            tool: "gcc".into(),
            hint: format!("to compile the QEMU instruction-counting plugin ({e})"),
        })?;
    let _ = fs::remove_file(&src);
    if !out.status.success() {
        return Err(DeployError::Run(format!(
            "compiling the QEMU plugin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    // Renaming makes a concurrent build of the same plugin harmless.
    fs::rename(&tmp, &so).map_err(io_err(&so))?;
    Ok(so)
}

/// Runs the firmware once on `board` and parses its output.
pub(crate) fn run_firmware(
    board: &Board,
    elf: &Path,
    plugin: Option<&Path>,
    run_dir: &Path,
    timeout: Duration,
    images: usize,
    layers: usize,
) -> Result<RunOutput, DeployError> {
    let run = run_raw(board, elf, plugin, run_dir, timeout)?;
    if !run.completed() {
        return Err(run.failure(format!("{} did not complete", board.name)));
    }
    let mut out = parse_output(&run.stdout, images, layers).map_err(|why| run.failure(why))?;
    if let Some(marks) = &run.marks {
        let (per_image, per_layer) =
            costs_from_marks(marks, images, layers).map_err(|why| run.failure(why))?;
        out.per_image = per_image;
        out.per_layer = per_layer;
    } else if board.harness == Harness::Std {
        // Wall time only on the host: no per-layer figures.
        out.per_layer.clear();
    }
    Ok(out)
}

/// What one firmware run left: its exit status, its standard output, and the marker counts
/// of the instruction-counting plugin (when it ran with one).
#[derive(Debug)]
pub(crate) struct RawRun {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub marks: Option<String>,
    pub stderr_path: PathBuf,
}

impl RawRun {
    /// True when the firmware exited successfully after printing `DNAL done`.
    pub(crate) fn completed(&self) -> bool {
        self.status.success()
            && self
                .stdout
                .lines()
                .any(|l| l.trim_end().ends_with("DNAL done"))
    }

    /// An error saying `why`, with the ends of the run's output.
    pub(crate) fn failure(&self, why: String) -> DeployError {
        let err = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let tail = |s: &str| {
            s.lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        DeployError::Run(format!(
            "{why} ({}); stdout:\n{}\nstderr:\n{}",
            self.status,
            tail(&self.stdout),
            tail(&err)
        ))
    }
}

/// Runs the firmware once on `board` (QEMU with the plugin when given, probe-rs, or
/// natively), its output going to files in `run_dir`.
pub(crate) fn run_raw(
    board: &Board,
    elf: &Path,
    plugin: Option<&Path>,
    run_dir: &Path,
    timeout: Duration,
) -> Result<RawRun, DeployError> {
    let marks_path = run_dir.join("marks.txt");
    let _ = fs::remove_file(&marks_path);
    let plugin_arg = plugin.map(|p| format!("{},out={}", p.display(), marks_path.display()));
    let mut cmd = match board.runner {
        Runner::Native => Command::new(elf),
        Runner::QemuSystem { machine, cpu } => {
            need_tool("qemu-system-arm", "apt-get install qemu-system-arm")?;
            let mut c = Command::new("qemu-system-arm");
            c.args(["-cpu", cpu, "-machine", machine, "-nographic"])
                .args(["-semihosting-config", "enable=on,target=native"])
                .args(["-icount", "shift=0"]);
            if let Some(p) = &plugin_arg {
                c.args(["-plugin", p]);
            }
            c.arg("-kernel").arg(elf);
            c
        }
        Runner::QemuUser { program, cpu } => {
            need_tool(program, "apt-get install qemu-user")?;
            let mut c = Command::new(program);
            c.args(["-cpu", cpu]);
            if let Some(p) = &plugin_arg {
                c.args(["-plugin", p]);
            }
            c.arg(elf);
            c
        }
        Runner::ProbeRs { chip } => {
            let mut c = Command::new("probe-rs");
            c.args(["run", "--chip", chip]).arg(elf);
            c
        }
    };
    // Output goes to files: piping QEMU's semihosting output can stall it.
    let stdout_path = run_dir.join("stdout.txt");
    let stderr_path = run_dir.join("stderr.txt");
    let stdout = fs::File::create(&stdout_path).map_err(io_err(&stdout_path))?;
    let stderr = fs::File::create(&stderr_path).map_err(io_err(&stderr_path))?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    let mut child = cmd
        .spawn()
        .map_err(|e| DeployError::Run(format!("starting {:?}: {e}", cmd.get_program())))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| DeployError::Run(e.to_string()))?
        {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DeployError::Run(format!(
                "{} did not finish within {}s; output in {}",
                board.name,
                timeout.as_secs(),
                run_dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read_to_string(&stdout_path).map_err(io_err(&stdout_path))?;
    let marks = match plugin {
        Some(_) if status.success() => {
            Some(fs::read_to_string(&marks_path).map_err(io_err(&marks_path))?)
        }
        _ => None,
    };
    Ok(RawRun {
        status,
        stdout,
        marks,
        stderr_path,
    })
}

fn need_tool(tool: &str, hint: &str) -> Result<(), DeployError> {
    match which(tool) {
        Some(_) => Ok(()),
        None => Err(DeployError::ToolMissing {
            tool: tool.into(),
            hint: hint.into(),
        }),
    }
}

/// Parses the `DNAL ...` lines a harness prints.
fn parse_output(text: &str, images: usize, layers: usize) -> Result<RunOutput, String> {
    let mut logits = vec![None; images];
    let mut per_image = vec![0u64; images];
    let mut per_layer = vec![Vec::new(); images];
    let mut stack = None;
    for line in text.lines() {
        let Some(rest) = line.find("DNAL ").map(|p| &line[p + 5..]) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let kind = words.next().unwrap_or("");
        let index = |w: Option<&str>| -> Result<usize, String> {
            w.and_then(|s| s.parse().ok())
                .filter(|&i: &usize| i < images)
                .ok_or_else(|| format!("bad image index in {line:?}"))
        };
        match kind {
            "logits" => {
                let i = index(words.next())?;
                let values: Vec<&str> = words.collect();
                let joined = values.join(" ");
                let bits: Result<Vec<u32>, _> = if joined.starts_with('[') {
                    joined
                        .trim_matches(|c| c == '[' || c == ']')
                        .split(',')
                        .map(|s| s.trim().parse::<u32>())
                        .collect()
                } else {
                    values.iter().map(|s| u32::from_str_radix(s, 16)).collect()
                };
                let bits = bits.map_err(|e| format!("bad logits in {line:?}: {e}"))?;
                logits[i] = Some(bits);
            }
            "nanos" => {
                let i = index(words.next())?;
                per_image[i] = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            }
            "cycles" => {
                let i = index(words.next())?;
                per_image[i] = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let rest: Vec<&str> = words.collect();
                per_layer[i] = rest
                    .join(" ")
                    .trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect();
            }
            "stack" => stack = words.next().and_then(|s| s.parse().ok()),
            "panic" | "hardfault" => return Err(format!("the firmware stopped: {rest}")),
            _ => {}
        }
    }
    let logits = logits
        .into_iter()
        .enumerate()
        .map(|(i, l)| l.ok_or_else(|| format!("no logits for image {i}")))
        .collect::<Result<Vec<_>, _>>()?;
    if per_layer.iter().any(|l| !l.is_empty() && l.len() != layers) {
        return Err(format!("expected {layers} per-layer cycle counts"));
    }
    if per_layer.iter().all(|l| l.is_empty()) {
        per_layer.clear();
    }
    Ok(RunOutput {
        logit_bits: logits,
        stack_bytes: stack.ok_or("no stack report")?,
        per_image,
        per_layer,
    })
}

/// Per-image and per-layer instruction counts from the plugin's marker counts: each image
/// has a marker before its inference and one after each layer. A marker's count excludes the
/// marker itself, so the marker instructions are subtracted out of the layer figures.
fn costs_from_marks(
    marks: &str,
    images: usize,
    layers: usize,
) -> Result<(Vec<u64>, Vec<Vec<u64>>), String> {
    let counts: Vec<u64> = marks
        .lines()
        .map(|l| {
            l.trim()
                .parse::<u64>()
                .map_err(|e| format!("bad marker count {l:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let per = layers + 1;
    if counts.len() != images * per {
        return Err(format!(
            "the plugin saw {} markers, expected {} ({images} images x ({layers} layers + 1))",
            counts.len(),
            images * per
        ));
    }
    let mut per_image = Vec::with_capacity(images);
    let mut per_layer = Vec::with_capacity(images);
    for image in counts.chunks_exact(per) {
        let layer_costs: Vec<u64> = image.windows(2).map(|w| w[1] - w[0] - 1).collect();
        per_image.push(layer_costs.iter().sum());
        per_layer.push(layer_costs);
    }
    Ok((per_image, per_layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_become_layer_costs() {
        let marks = "100\n151\n252\n1000\n1051\n1152\n";
        let (per_image, per_layer) = costs_from_marks(marks, 2, 2).unwrap();
        assert_eq!(per_layer, vec![vec![50, 100], vec![50, 100]]);
        assert_eq!(per_image, vec![150, 150]);
        assert!(costs_from_marks("1\n2\n", 2, 2).is_err());
    }

    #[test]
    fn output_lines_parse_in_both_formats() {
        let one = 1.0f32.to_bits();
        let text = format!(
            "noise\nDNAL logits 0 {one:08x} 00000000\nDNAL logits 1 [{one}, 0]\n\
             DNAL cycles 1 90 [40, 50]\nDNAL stack 320\nDNAL done\n"
        );
        let out = parse_output(&text, 2, 2).unwrap();
        assert_eq!(out.logit_bits, vec![vec![one, 0], vec![one, 0]]);
        assert_eq!(out.stack_bytes, 320);
        assert_eq!(out.per_image, vec![0, 90]);
        assert_eq!(out.per_layer, vec![vec![], vec![40, 50]]);
        assert!(parse_output("DNAL panic oops\n", 1, 1).is_err());
    }
}
