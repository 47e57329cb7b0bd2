//! Long runs of the export fuzzer (the CI test runs 4000 cases of one seed):
//!
//! ```sh
//! cargo run --release -p dnal-bench --bin fuzz_export -- \
//!     --cases 1000000 --seed 7 --threads 2
//! cargo run --release -p dnal-bench --bin fuzz_export -- \
//!     --seed 7 --case 123456      # replay one case, printing what it is
//! ```
//!
//! Exits 1 on the first failures (a panic, a hang, or generated code that holds export text
//! outside comments), printing each with the command that replays it. docs/fuzzing.md.

// The CI fuzz test and this long-run driver share one mutator and one oracle.
#[path = "../../../device/firmware/tests/support/fuzz_export.rs"]
mod fuzz;

use std::time::{Duration, Instant};

fn main() {
    let mut cases: u64 = 100_000;
    let mut seed: u64 = 1;
    let mut threads: usize = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut replay: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            let v = args.next().unwrap_or_default();
            v.parse().unwrap_or_else(|_| {
                eprintln!("{name} needs a number, got {v:?}");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--cases" => cases = value("--cases"),
            "--seed" => seed = value("--seed"),
            "--threads" => threads = value("--threads").max(1) as usize,
            "--case" => replay = Some(value("--case")),
            _ => {
                eprintln!("usage: fuzz_export [--cases N] [--seed S] [--threads T] [--case I]");
                std::process::exit(2);
            }
        }
    }
    if let Some(index) = replay {
        let case = fuzz::make_case(&fuzz::seeds(), seed, index);
        println!("case {index} of seed {seed}: from {}", case.seed);
        for m in &case.mutations {
            println!("  {m}");
        }
        let dir = tempfile::tempdir().expect("a temporary folder");
        let result = fuzz::run_case(dir.path(), &case);
        println!("result: {result:?}");
        match dnal_export::Export::load(dir.path()) {
            Ok(export) => println!("loaded: {} layers", export.arch().layers.len()),
            Err(e) => println!("refused: {e}"),
        }
        std::process::exit(i32::from(result.is_err()));
    }
    let start = Instant::now();
    let summary = fuzz::run(seed, cases, threads, Duration::from_secs(60), &|done| {
        eprintln!(
            "{done} of {cases} cases, {:.0} s",
            start.elapsed().as_secs_f64()
        );
    });
    println!(
        "{} cases of seed {seed} in {:.1} s on {threads} threads",
        summary.cases,
        start.elapsed().as_secs_f64()
    );
    for (outcome, n) in &summary.outcomes {
        println!("  {outcome:?}: {n}");
    }
    if !summary.failures.is_empty() {
        for (case, why) in summary.failures.iter().take(20) {
            println!("FAILED {}", fuzz::report(seed, case, why));
        }
        println!("{} failures", summary.failures.len());
        std::process::exit(1);
    }
}
