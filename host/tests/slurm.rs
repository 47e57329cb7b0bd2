//! docs/sweeps.md's Slurm jobs on a real (one-node) Slurm cluster: the block is read from the
//! docs and run as it stands there, with the test's own sweep in its three settings, and the
//! `sweep.json` it collects must equal the same sweep run in one process.
//!
//! Needs root, slurm-wlm and munge (scripts/setup-debian.sh installs them; CI runs as root).
//! `DNAL_SKIP_SLURM=1` skips it on a machine where neither holds, and says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The test's sweep: small synthetic data, two budgets and two cost weightings (4 points), on
/// the board the docs use.
const SWEEP: &str = "--dataset synthetic --train-limit 512 --test-limit 128 \
    --epochs-weights 2 --epochs-gates 2 --epochs-finetune 1 --seed 3 \
    --board cortex-m7-qemu --budgets-ms 30,60 --costs latency,flops";
const LAST_POINT: usize = 3;

/// How long the jobs may take together (they take about two minutes on a 2-core machine).
const JOBS_TIMEOUT: Duration = Duration::from_secs(20 * 60);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The shell block under "### Slurm" in docs/sweeps.md.
fn docs_block() -> String {
    let docs = std::fs::read_to_string(repository().join("docs/sweeps.md")).unwrap();
    let section = &docs[docs
        .find("### Slurm")
        .expect("docs/sweeps.md has a Slurm section")..];
    let start = section
        .find("```sh\n")
        .expect("a sh block in the Slurm section")
        + 6;
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_string()
}

/// The block with its three settings (`sweep=`, `out=`, `last=`, its first lines) set to the
/// test's; every other line is kept as written.
fn with_settings(block: &str, sweep: &str, out: &str, last: usize) -> String {
    let mut lines: Vec<String> = block.lines().map(str::to_string).collect();
    for (line, (name, value)) in lines.iter_mut().zip([
        ("sweep", format!("'{sweep}'")),
        ("out", out.to_string()),
        ("last", last.to_string()),
    ]) {
        assert!(
            line.starts_with(&format!("{name}=")),
            "docs/sweeps.md's Slurm block no longer starts with its {name}= setting: {line:?}"
        );
        *line = format!("{name}={value}");
    }
    lines.join("\n") + "\n"
}

/// The cluster of scripts/slurm-localhost.sh, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(repository().join("scripts/slurm-localhost.sh"))
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the one-node Slurm cluster did not start: {}",
            common::stderr(&out)
        );
        Cluster { dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// squeue's lines: job id, state and reason of every job still known.
    fn queue(&self) -> String {
        let out = Command::new("squeue")
            .args(["-h", "-o", "%i %T %r"])
            .env("SLURM_CONF", self.conf())
            .output()
            .unwrap();
        assert!(out.status.success(), "squeue: {}", common::stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repository().join("scripts/slurm-localhost.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// What the jobs printed (slurm-*.out in the folder they were submitted from), for a failure.
fn job_logs(dir: &Path) -> String {
    let mut logs = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("slurm-") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            logs += &format!("--- {name}\n");
            for line in tail.into_iter().rev() {
                logs += line;
                logs += "\n";
            }
        }
    }
    logs
}

/// sweep.json without what differs between two runs of the same sweep: wall-clock times and
/// the folders they wrote.
fn comparable(path: &Path) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|key, _| !key.contains("seconds") && key != "folder");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut value: Value = serde_json::from_str(&text).unwrap();
    strip(&mut value);
    value
}

#[test]
fn the_docs_slurm_jobs_collect_the_sweep_that_one_process_runs() {
    if std::env::var_os("DNAL_SKIP_SLURM").is_some() {
        eprintln!("DNAL_SKIP_SLURM is set: the Slurm sweep test did not run");
        return;
    }
    let cluster = Cluster::start();
    let work = tempfile::tempdir().unwrap();
    let dnal = PathBuf::from(env!("CARGO_BIN_EXE_dnal"));
    let path = format!(
        "{}:{}",
        dnal.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let script = with_settings(&docs_block(), SWEEP, "sweep", LAST_POINT);
    let submitted = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(work.path())
        .env("SLURM_CONF", cluster.conf())
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        submitted.status.success(),
        "submitting the docs' jobs failed: {}\n{script}",
        common::stderr(&submitted)
    );
    let stdout = String::from_utf8(submitted.stdout).unwrap();
    let collect_job = stdout.lines().last().expect("sbatch printed the job id");
    assert!(collect_job.chars().all(|c| c.is_ascii_digit()), "{stdout}");

    // Wait until every job has left the queue; a failed job leaves its dependants pending with
    // DependencyNeverSatisfied for ever.
    let started = Instant::now();
    loop {
        let queue = cluster.queue();
        if queue.trim().is_empty() {
            break;
        }
        assert!(
            !queue.contains("DependencyNeverSatisfied"),
            "a job failed:\n{queue}\n{}",
            job_logs(work.path())
        );
        assert!(
            started.elapsed() < JOBS_TIMEOUT,
            "the jobs did not finish in {JOBS_TIMEOUT:?}:\n{queue}\n{}",
            job_logs(work.path())
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let collected = work.path().join("sweep/sweep.json");
    assert!(
        collected.exists(),
        "the collect job wrote no sweep.json:\n{}",
        job_logs(work.path())
    );

    // The same sweep in one process.
    let one = work.path().join("one");
    let mut args = vec!["sweep"];
    args.extend(SWEEP.split_whitespace());
    args.extend(["--out", one.to_str().unwrap()]);
    let out = common::dnal(&args);
    assert!(out.status.success(), "{}", common::stderr(&out));

    let jobs = comparable(&collected);
    assert_eq!(jobs["points"].as_array().unwrap().len(), LAST_POINT + 1);
    assert_eq!(jobs["missing"], Value::Array(vec![]));
    assert_eq!(jobs, comparable(&one.join("sweep.json")));
    for file in ["sweep.md", "pareto.svg", "pareto.png"] {
        assert!(work.path().join("sweep").join(file).exists(), "{file}");
    }
    // Without --lambda every point, like a budgeted search, starts lambda_a from the data.
    let points = work.path().join("sweep/points");
    let mut seen = 0;
    for point in std::fs::read_dir(&points).unwrap() {
        let report = point.unwrap().path().join("report.json");
        let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["config"]["lambda_from_data"], true, "{report}");
        seen += 1;
    }
    assert_eq!(seen, LAST_POINT + 1);
}

#[test]
fn the_settings_replace_only_the_first_three_lines() {
    let block = docs_block();
    let set = with_settings(&block, "--board b", "o", 1);
    let (old, new): (Vec<&str>, Vec<&str>) = (block.lines().collect(), set.lines().collect());
    assert_eq!(old.len(), new.len());
    assert_eq!(&new[..3], ["sweep='--board b'", "out=o", "last=1"]);
    assert_eq!(old[3..], new[3..]);
    // The jobs the docs submit: prepare, the points array, collect.
    assert!(block.contains("--only prepare") && block.contains("--array=0-$last"));
    assert!(block.contains("--only point --point") && block.contains("--only collect"));
}
