//! A seed names one search: two searches with the same seed, run at once in one process (a
//! program's threads, or tests), end with the same network and the same numbers.

use dnal::config::SearchConfig;
use dnal::progress::Silent;
use dnal::report::Report;

mod common;

fn search_with_seed_5() -> Report {
    let dir = tempfile::tempdir().unwrap();
    let config = common::quick_synthetic(SearchConfig {
        seed: 5,
        ..SearchConfig::default()
    });
    dnal::search::search(config, dir.path(), &mut Silent).unwrap()
}

/// A report's numbers that the seed fixes (not its timings).
fn seeded(report: &Report) -> impl PartialEq + std::fmt::Debug + use<> {
    let losses: Vec<(String, f64, f64)> = report
        .history
        .iter()
        .map(|epoch| (epoch.stage.clone(), epoch.loss, epoch.test_top1))
        .collect();
    (
        losses,
        report.gates.clone(),
        report.channels.clone(),
        report.pruned.clone(),
    )
}

#[test]
fn searches_with_one_seed_run_at_once_end_alike() {
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(search_with_seed_5);
        let second = scope.spawn(search_with_seed_5);
        (first.join().unwrap(), second.join().unwrap())
    });
    assert_eq!(seeded(&first), seeded(&second));
    // And alike with a search run alone.
    assert_eq!(seeded(&first), seeded(&search_with_seed_5()));
}
