//! The pruned dense network computes what the gated network computes with hard 0/1 gates.

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use dnal_models::{
    ChannelMasks, GateMode, GatedNet, GatedNetConfig, NetSpec, Shape3, model_spec,
    model_spec_at_width, prune_channels,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random batch-norm statistics and affine terms, so that BN is far from the identity and a
/// mistake in slicing shows.
fn randomise_batch_norms(mut net: GatedNet, device: &Device) -> GatedNet {
    for unit in &mut net.convs {
        let [c] = unit.bn.gamma.dims();
        let uniform = |lo, hi| Tensor::<1>::random([c], Distribution::Uniform(lo, hi), device);
        unit.bn.gamma = Param::from_tensor(uniform(0.5, 1.5));
        unit.bn.beta = Param::from_tensor(uniform(-0.5, 0.5));
        unit.bn.running_mean = RunningState::new(uniform(-0.3, 0.3));
        unit.bn.running_var = RunningState::new(uniform(0.5, 2.0));
    }
    net
}

/// Keeps each prunable channel with probability 1/2 (at least one per group), and sets the
/// gates so that the hard gates say the same.
fn random_masks(net: &mut GatedNet, seed: u64, device: &Device) -> ChannelMasks {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut masks = ChannelMasks::full(&net.plan);
    for (gate_index, gate) in net.gates.iter_mut().enumerate() {
        let group = net.plan.groups.group_of_gate[gate_index];
        let n = masks.keep[group].len();
        let mut keep: Vec<bool> = (0..n).map(|_| rng.random_bool(0.5)).collect();
        if !keep.iter().any(|&k| k) {
            keep[rng.random_range(0..n)] = true;
        }
        let s: Vec<f32> = keep.iter().map(|&k| if k { 1.0 } else { -1.0 }).collect();
        gate.s = Param::from_tensor(Tensor::from_data(TensorData::new(s, [n]), device));
        masks.keep[group] = keep;
    }
    masks
}

/// Closes whole branches of a supernet, layer `i` by `modes[i % modes.len()]`: 0 none, 1 a
/// random half, 2 all but one (so an add without a residual is left with one input and
/// is replaced by it).
fn close_branches(
    net: &mut GatedNet,
    masks: &mut ChannelMasks,
    seed: u64,
    modes: &[usize],
    device: &Device,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let sets = net.plan.groups.branch_sets.clone();
    for (i, set) in sets.iter().enumerate() {
        let survivor = rng.random_range(0..set.branches.len());
        for (b, branch) in set.branches.iter().enumerate() {
            let close = match modes[i % modes.len()] {
                0 => false,
                1 => b != survivor && rng.random_bool(0.5),
                _ => b != survivor,
            };
            if close {
                let keep = &mut masks.keep[branch.group];
                keep.iter_mut().for_each(|k| *k = false);
                let gate = net.plan.groups.gate_of_group[branch.group].unwrap();
                let n = keep.len();
                net.gates[gate].s = Param::from_tensor(Tensor::from_data(
                    TensorData::new(vec![-1.0f32; n], [n]),
                    device,
                ));
            }
        }
    }
}

fn assert_pruning_is_exact(spec: NetSpec, seed: u64) {
    assert_pruning_is_exact_with(spec, seed, &[0, 1, 2]);
}

/// [`assert_pruning_is_exact`], a supernet's branches closed by `modes` ([`close_branches`]).
fn assert_pruning_is_exact_with(spec: NetSpec, seed: u64, modes: &[usize]) {
    let device = Device::flex();
    device.seed(seed);
    let net = GatedNetConfig::new(spec).init(&device).unwrap();
    let mut net = randomise_batch_norms(net, &device).valid();
    let mut masks = random_masks(&mut net, seed, &device);
    close_branches(&mut net, &mut masks, seed, modes, &device);
    // The masks agree with the gates they were set from.
    assert_eq!(ChannelMasks::from_gates(&net), masks);

    let pruned = prune_channels(&net, &masks).unwrap();
    let input = net.plan.spec.input;
    let x = Tensor::<4>::random(
        [3, input.channels, input.height, input.width],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let gated = net
        .forward(x.clone(), GateMode::Hard)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let dense = pruned
        .forward(x, GateMode::Off)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let max_diff = gated
        .iter()
        .zip(&dense)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_diff <= 1e-4,
        "{}: pruned and hard-gated outputs differ by {max_diff}",
        net.plan.spec.name
    );
    // One gate per group that kept a channel: no group was split or invented.
    let live_groups = net
        .plan
        .groups
        .group_of_gate
        .iter()
        .filter(|&&g| masks.keep[g].contains(&true))
        .count();
    assert_eq!(pruned.gates.len(), live_groups);
    // Something was removed, and the cost model saw it.
    assert!(pruned.flops() < net.flops());
    assert!(pruned.params() < net.params());
    assert_eq!(
        pruned.flops(),
        net.plan.flops.total(&masks.counts()).round() as u64
    );
    // Every conv of the pruned network has the kept channel count of its group.
    for node in &pruned.plan.spec.nodes {
        if let dnal_models::Op::Conv { out_channels, .. } = node.op {
            let index = net.plan.spec.node_index(&node.name).unwrap();
            let group = net.plan.groups.value_group[index + 1];
            assert_eq!(out_channels, masks.kept(group).len(), "{}", node.name);
        }
    }
}

#[test]
fn pruned_vgg_matches_hard_gates() {
    let spec = model_spec("vgg-small", Shape3::new(1, 28, 28), 10).unwrap();
    for seed in [1, 2] {
        assert_pruning_is_exact(spec.clone(), seed);
    }
}

#[test]
fn pruned_resnet_with_coupled_residual_groups_matches_hard_gates() {
    // ResNet-20 on small images: stride-2 projections, identity shortcuts and coupled stages.
    let spec = model_spec("resnet20", Shape3::new(3, 16, 16), 10).unwrap();
    for seed in [3, 4] {
        assert_pruning_is_exact(spec.clone(), seed);
    }
}

#[test]
fn pruned_resnet50_with_gated_bottlenecks_and_coupled_outputs_matches_hard_gates() {
    // Bottlenecks: the reduction and the 3x3 gated apart, each stage's 4x outputs coupled
    // through the adds and the projection shortcuts.
    let spec = model_spec("resnet50", Shape3::new(1, 16, 16), 10).unwrap();
    assert_pruning_is_exact(spec, 9);
}

#[test]
fn pruned_mobilenetv2_with_depthwise_and_coupled_projections_matches_hard_gates() {
    // Expansions sliced with their depthwise filters and the projections' inputs; each
    // stage's projections one coupled group joined by residual adds.
    let spec = model_spec_at_width("mobilenetv2", Shape3::new(3, 16, 16), 10, Some(0.35)).unwrap();
    for seed in [5, 6] {
        assert_pruning_is_exact(spec.clone(), seed);
    }
}

#[test]
fn a_pruned_supernet_without_its_closed_branches_matches_hard_gates() {
    // Parallel candidates summed per layer; closed ones are removed and their constant
    // folded into a survivor, an add left with one input replaced by it.
    let spec = model_spec_at_width("proxyless", Shape3::new(1, 16, 16), 10, Some(0.35)).unwrap();
    for seed in [7, 8] {
        assert_pruning_is_exact(spec.clone(), seed);
    }
    // One candidate left everywhere: a replaced add is the residual of the next layer.
    assert_pruning_is_exact_with(spec.clone(), 10, &[2]);
    let device = Device::flex();
    let mut net = GatedNetConfig::new(spec).init(&device).unwrap();
    let mut masks = random_masks(&mut net, 9, &device);
    close_branches(&mut net, &mut masks, 9, &[0, 1, 2], &device);
    let pruned = prune_channels(&net.valid(), &masks).unwrap();
    let names: Vec<&str> = pruned
        .plan
        .spec
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    // A layer without a residual that kept one candidate (i % 3 == 2) lost its add.
    let sets = &net.plan.groups.branch_sets;
    let set = (0..sets.len())
        .map(|i| &sets[i])
        .enumerate()
        .find(|(i, set)| {
            i % 3 == 2 && net.plan.spec.nodes[set.add].inputs.len() == set.branches.len()
        })
        .map(|(_, set)| set)
        .expect("a stride-2 layer");
    let add = &net.plan.spec.nodes[set.add].name;
    assert!(!names.contains(&add.as_str()), "{add} is still there");
    let projections = set
        .branches
        .iter()
        .filter(|b| names.contains(&net.plan.spec.nodes[b.projection].name.as_str()))
        .count();
    assert_eq!(projections, 1);
    // No candidate may take the last branch of a layer with it.
    for branch in &set.branches {
        masks.keep[branch.group].iter_mut().for_each(|k| *k = false);
    }
    let err = prune_channels(&net.valid(), &masks)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(add.as_str()) && err.contains("one must keep a channel"),
        "{err}"
    );
    // With every gate closed, each layer keeps one channel of its best candidate.
    for gate in &mut net.gates {
        let [n] = gate.s.dims();
        gate.s = Param::from_tensor(Tensor::ones([n], &device).neg());
    }
    let masks = ChannelMasks::from_gates(&net);
    for set in &net.plan.groups.branch_sets {
        let kept: usize = set.branches.iter().map(|b| masks.kept(b.group).len()).sum();
        assert_eq!(kept, 1);
    }
    prune_channels(&net.valid(), &masks).unwrap();
}

#[test]
fn an_empty_group_is_refused() {
    let device = Device::flex();
    let spec = model_spec("vgg-small", Shape3::new(1, 28, 28), 10).unwrap();
    let net = GatedNetConfig::new(spec).init(&device).unwrap();
    let mut masks = ChannelMasks::full(&net.plan);
    let group = net.plan.groups.group_of_gate[1];
    masks.keep[group].iter_mut().for_each(|k| *k = false);
    let err = prune_channels(&net, &masks).unwrap_err().to_string();
    assert!(
        err.contains("conv2") && err.contains("pruned to nothing"),
        "{err}"
    );
}

#[test]
fn all_gates_closed_still_keeps_one_channel_per_layer() {
    let device = Device::flex();
    let spec = model_spec("vgg-small", Shape3::new(1, 28, 28), 10).unwrap();
    let mut net = GatedNetConfig::new(spec).init(&device).unwrap();
    for gate in &mut net.gates {
        let [n] = gate.s.dims();
        gate.s = Param::from_tensor(Tensor::ones([n], &device).neg());
    }
    let masks = ChannelMasks::from_gates(&net);
    let pruned = prune_channels(&net.valid(), &masks).unwrap();
    assert!(pruned.channels_per_gate().iter().all(|&c| c == 1));
}
