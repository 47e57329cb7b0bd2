//! The export reader and the code generator against a few thousand mutated exports: no
//! panic, no hang, a clean error or a valid export whose generated code holds export text
//! only in comments, as validated names (tests/support/fuzz_export.rs says how; for long
//! runs, `bench/src/bin/fuzz_export.rs` and docs/fuzzing.md).

#[path = "support/fuzz_export.rs"]
mod fuzz;

use std::time::{Duration, Instant};

/// Cases per CI run: a few seconds in release on two cores.
const CASES: u64 = 4000;
const SEED: u64 = 0x00d0_a1f0_221e;

#[test]
fn mutated_exports_are_refused_cleanly_or_generate_safe_code() {
    let start = Instant::now();
    let summary = fuzz::run(SEED, CASES, 2, Duration::from_secs(20), &|_| {});
    let failures: Vec<String> = summary
        .failures
        .iter()
        .take(10)
        .map(|(case, why)| fuzz::report(SEED, case, why))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        summary.failures.len(),
        summary.cases,
        failures.join("\n")
    );
    assert_eq!(summary.cases, CASES);
    eprintln!(
        "{CASES} cases in {:.1?}: {:?}",
        start.elapsed(),
        summary.outcomes
    );
    // The mutations must reach both ends: some exports still load (and generate code),
    // many are refused, for many different reasons.
    let loaded = summary
        .outcomes
        .get(&fuzz::Outcome::Loaded)
        .copied()
        .unwrap_or(0);
    assert!(
        loaded >= 20,
        "only {loaded} cases loaded: {:?}",
        summary.outcomes
    );
    assert!(summary.outcomes.len() >= 10, "{:?}", summary.outcomes);
}

#[test]
fn the_seeds_load_and_pass_the_checks() {
    let dir = tempfile::tempdir().unwrap();
    for seed in fuzz::seeds() {
        let case = fuzz::Case {
            index: 0,
            seed: seed.name,
            mutations: Vec::new(),
            arch_json: seed.arch_json.clone(),
            weights: seed.weights.clone(),
        };
        assert_eq!(
            fuzz::run_case(dir.path(), &case),
            Ok(fuzz::Outcome::Loaded),
            "{}",
            seed.name
        );
    }
}
