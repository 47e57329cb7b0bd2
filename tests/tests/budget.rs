//! Budget mode on a small synthetic problem: the search steers lambda_a and the pruned network
//! lands at or under the budget (and not far under it).

use dnal::arch_cost::CostWeighting;
use dnal::budget::Budget;
use dnal::config::SearchConfig;
use dnal::progress::Silent;

mod common;

/// A quick search to `budget`, its channels weighed by `cost`, lambda_a starting at `lambda`.
fn small(budget: Budget, cost: CostWeighting, lambda: f64) -> SearchConfig {
    common::quick_synthetic(SearchConfig {
        lambda,
        budget: Some(budget),
        cost,
        seed: 5,
        ..SearchConfig::default()
    })
}

#[test]
fn a_flops_budget_is_met_from_above_and_below() {
    let parent_flops = 21_903_104.0; // vgg-small on 1x28x28
    for (fraction, lambda) in [(0.25, 1e-3), (0.6, 2e-2)] {
        let dir = tempfile::tempdir().unwrap();
        let target = fraction * parent_flops;
        // Start lambda_a at very different values: the controller has to move it.
        let config = small(Budget::Flops(target), CostWeighting::Flops, lambda);
        let report = dnal::search::search(config, dir.path(), &mut Silent).unwrap();
        assert_eq!(report.parent.flops as f64, parent_flops);
        let flops = report.pruned.flops as f64;
        assert!(flops <= target, "{flops} MACs over the budget {target}");
        assert!(
            flops >= 0.85 * target,
            "{flops} MACs far under the budget {target}"
        );
        let budget = report.budget.expect("a budgeted search reports its budget");
        assert_eq!(budget.budget, Budget::Flops(target));
        assert_eq!(budget.fit.cost, flops);
        // The controller moved lambda_a away from where it started. Asked of every gate epoch,
        // not of the last alone: lambda_a may come back near its start once the gates settle.
        let moved = report
            .gates
            .iter()
            .map(|epoch| (epoch.lambda / lambda).ln().abs())
            .fold(0.0, f64::max);
        assert!(
            moved > 0.1,
            "lambda stayed near {lambda}: {:?}",
            report.gates.iter().map(|e| e.lambda).collect::<Vec<_>>()
        );
        assert_eq!(report.gates.last().map(|e| e.lambda), Some(budget.lambda));
    }
}

#[test]
fn a_params_budget_is_met_on_the_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(
        Budget::ParamsShare(0.3),
        CostWeighting::Params,
        SearchConfig::default().lambda,
    );
    let report = dnal::search::search(config, dir.path(), &mut Silent).unwrap();
    // The share resolves to the parent's parameters, and the fit lands on them.
    let target = 0.3 * report.parent.params as f64;
    let budget = report.budget.expect("a budgeted search reports its budget");
    assert_eq!(budget.budget, Budget::Params(target));
    let params = report.pruned.params as f64;
    assert!(params <= target, "{params} params over the budget {target}");
    assert!(
        params >= 0.85 * target,
        "{params} params far under the budget {target}"
    );
    assert_eq!(budget.fit.cost, params);
    // The gate records count the budget's cost too.
    let last = report.gates.last().expect("gate epochs are recorded");
    assert!(last.hard_params > 0 && (last.hard_params as f64) < report.parent.params as f64);
}
