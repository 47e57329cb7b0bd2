//! latency.json without a board: round trip, interpolation, predictions, marginal costs and
//! the errors of tables that do not fit an architecture (tables from a known cost model).

use std::collections::BTreeMap;

use dnal_export::{Arch, Layer, Op};
use dnal_firmware::codegen::code_stamp;
use dnal_firmware::latency::{
    Grid, GridOptions, InRow, LatencyError, LatencyTable, LayerStructure, profile,
};
use dnal_firmware::synth::{conv, linear, modelled_latency_table, vgg_small_arch, with_channels};
use dnal_kernels::{Activation, Shape3};

/// A cost shaped like the measured kernels': dense layers pay per full block of 4 output
/// channels and more per leftover channel, both linear in the input channels; the others
/// pay per channel.
fn blocked_cost(s: &LayerStructure, i: usize, o: usize) -> f64 {
    let (i, q, r) = (i as f64, (o / 4) as f64, (o % 4) as f64);
    match s.op.as_str() {
        "conv2d" | "linear" => 100.0 + 10.0 * i + q * (400.0 + 40.0 * i) + r * (150.0 + 15.0 * i),
        _ => 5.0 + 3.0 * i,
    }
}

fn table() -> LatencyTable {
    modelled_latency_table(
        &vgg_small_arch(),
        "cortex-m7-qemu",
        &GridOptions::default(),
        blocked_cost,
    )
    .unwrap()
}

fn counts(c: [usize; 5]) -> BTreeMap<String, usize> {
    ["conv1", "conv2", "conv3", "conv4", "conv5"]
        .iter()
        .zip(c)
        .map(|(n, c)| (n.to_string(), c))
        .collect()
}

#[test]
fn round_trip_is_exact_and_atomic() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nested").join("latency.json");
    let table = table();
    table.write(&path).unwrap();
    let back = LatencyTable::load(&path).unwrap();
    assert_eq!(back, table);
    assert_eq!(back.origin(), Some(path.as_path()));
    // Only the table is left beside it: the temporary file was renamed.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["latency.json".to_string()]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"format\": \"dnal-latency\""), "{text}");
    assert!(text.contains("\"axes\": \"in_out\""), "{text}");
    assert!(text.contains("\"axes\": \"channels\""), "{text}");
}

#[test]
fn lookups_are_exact_at_grid_points_linear_between_and_flag_extrapolation() {
    let t = table();
    let conv2 = t.layer("conv2").unwrap().structure.clone();
    // The cost model is what the interpolation assumes (bilinear in the input channels and
    // the full blocks, plus leftover channels): every count in range comes back exactly.
    for i in 1..=32 {
        for o in 1..=32 {
            let l = t.lookup("conv2", i, o).unwrap();
            assert!(
                (l.cost - blocked_cost(&conv2, i, o)).abs() < 1e-6,
                "conv2 {i} -> {o}: {} vs {}",
                l.cost,
                blocked_cost(&conv2, i, o)
            );
            assert!(!l.extrapolated, "{i} -> {o}");
        }
    }
    // Beyond the parent's counts: the end segments continue, flagged.
    for (i, o) in [(33, 8), (8, 33), (40, 41)] {
        let l = t.lookup("conv2", i, o).unwrap();
        assert!(l.extrapolated, "{i} -> {o}");
        assert!((l.cost - blocked_cost(&conv2, i, o)).abs() < 1e-6);
    }
    // A cost that is not linear shows the interpolation itself: pool1 is measured at 1, 17
    // and 32 channels; halfway between 1 and 17 is the mean of the two.
    let quadratic = modelled_latency_table(
        &vgg_small_arch(),
        "cortex-m7-qemu",
        &GridOptions::default(),
        |_, i, _| (i * i) as f64,
    )
    .unwrap();
    assert_eq!(quadratic.lookup("pool1", 17, 17).unwrap().cost, 289.0);
    assert_eq!(quadratic.lookup("pool1", 9, 9).unwrap().cost, 145.0);
    let beyond = quadratic.lookup("pool1", 47, 47).unwrap();
    assert!(beyond.extrapolated);
    assert_eq!(beyond.cost, 1024.0 + 15.0 * (1024.0 - 289.0) / 15.0);
}

#[test]
fn predictions_add_every_layer_and_convert_to_ms() {
    let t = table();
    let parent = vgg_small_arch();
    for c in [
        [32, 32, 64, 64, 128],
        [26, 6, 50, 25, 111],
        [1, 1, 1, 1, 1],
        [4, 31, 28, 8, 15],
    ] {
        let arch = with_channels(&parent, &counts(c)).unwrap();
        let p = t.predict(&arch).unwrap();
        let summary = arch.summary().unwrap();
        let want: f64 = arch
            .layers
            .iter()
            .zip(&summary.layers)
            .map(|(l, s)| {
                blocked_cost(
                    &LayerStructure::of(l, s),
                    s.input_shapes[0].channels,
                    s.output.channels,
                )
            })
            .sum();
        assert!(
            (p.total - want).abs() < 1e-6,
            "{c:?}: {} vs {want}",
            p.total
        );
        assert_eq!(p.per_layer.len(), arch.layers.len());
        assert_eq!(p.per_layer[1].name, "conv2");
        assert_eq!(
            (p.per_layer[1].in_channels, p.per_layer[1].out_channels),
            (c[0], c[1])
        );
        assert!(!p.extrapolated);
        assert_eq!(p.unit, "instructions");
        // cortex-m7-qemu: 216 MHz, one instruction taken as one cycle.
        assert!((p.ms - p.total / 216e6 * 1e3).abs() < 1e-12);
        assert_eq!(t.to_ms(216e6), 1000.0);
    }
}

#[test]
fn a_depthwise_layer_pruned_to_one_channel_keeps_its_costs() {
    // expand 1 -> 8, depthwise 8, project 8 -> 4: a mobile block.
    let layers = vec![
        Layer::new(
            "expand",
            vec![0],
            conv(1, 8, 1, 1, 0, false, Activation::Relu),
        ),
        Layer::new("dw", vec![1], conv(8, 8, 3, 1, 1, true, Activation::Relu)),
        Layer::new(
            "project",
            vec![2],
            conv(8, 4, 1, 1, 0, false, Activation::None),
        ),
        Layer::new("gap", vec![3], Op::GlobalAvgPool),
        Layer::new("fc", vec![4], linear(4, 10, Activation::None)),
    ];
    let mut parent = Arch::new("tiny-mobile", Shape3::new(1, 8, 8), 10, layers);
    parent.dataset = "synthetic".into();
    parent.complete().unwrap();
    let t = modelled_latency_table(
        &parent,
        "cortex-m7-qemu",
        &GridOptions::default(),
        blocked_cost,
    )
    .unwrap();
    // One expanded channel: the depthwise layer is exported with one group, which reads as
    // a dense 1 -> 1 conv; the table's depthwise costs still apply.
    let one = with_channels(&parent, &BTreeMap::from([("expand".to_string(), 1)])).unwrap();
    assert!(matches!(&one.layers[1].op, Op::Conv2d(c) if !c.is_depthwise()));
    let p = t.predict(&one).unwrap();
    assert_eq!(
        (p.per_layer[1].in_channels, p.per_layer[1].out_channels),
        (1, 1)
    );
    assert_eq!(p.per_layer[1].cost, t.lookup("dw", 1, 1).unwrap().cost);
    // A layer profiled dense stays dense: the expand of one channel is still the table's.
    let one_in_out = with_channels(
        &parent,
        &BTreeMap::from([("expand".to_string(), 1), ("project".to_string(), 1)]),
    )
    .unwrap();
    let p = t.predict(&one_in_out).unwrap();
    assert_eq!(p.per_layer[0].cost, t.lookup("expand", 1, 1).unwrap().cost);
}

#[test]
fn marginal_costs_are_the_interpolant_slopes() {
    let t = table();
    // At 16 input channels and 10 outputs (2 blocks + 2 leftovers): one more input channel
    // costs 10 + 2 * 40 + 2 * 15; one more output channel, averaged over a block, (400 + 40 *
    // 16) / 4.
    let m = t.marginal("conv2", 16, 10).unwrap();
    assert!((m.per_in_channel - 120.0).abs() < 1e-9, "{m:?}");
    assert!((m.per_out_channel - 260.0).abs() < 1e-9, "{m:?}");
    // Layers that keep their channel count put the whole cost on the input side.
    let m = t.marginal("pool1", 20, 20).unwrap();
    assert_eq!((m.per_in_channel, m.per_out_channel), (3.0, 0.0));
    // The logits cannot change: no slope on that axis, and asking for another count fails.
    let m = t.marginal("fc", 100, 10).unwrap();
    assert_eq!(m.per_out_channel, 0.0);
    assert!((m.per_in_channel - (10.0 + 2.0 * 40.0 + 2.0 * 15.0)).abs() < 1e-9);
}

fn err_text(e: LatencyError) -> String {
    e.to_string()
}

#[test]
fn tables_that_do_not_fit_the_architecture_say_what_and_how_to_fix() {
    let t = table();
    let parent = vgg_small_arch();

    // A layer the table has never seen.
    let mut renamed = parent.clone();
    renamed.layers[4].name = "conv6".into();
    let err = t.predict(&renamed).unwrap_err();
    // The mend is a new table, of this model on this board (the CLI names its command).
    assert_eq!(
        err.table_to_profile(),
        Some(("vgg-small", "cortex-m7-qemu"))
    );
    let e = err_text(err);
    assert!(
        e.contains("does not cover layer conv6 (model vgg-small)"),
        "{e}"
    );
    assert!(
        e.contains("profile model vgg-small on board cortex-m7-qemu again"),
        "{e}"
    );
    assert!(matches!(
        t.lookup("conv6", 1, 1),
        Err(LatencyError::NotCovered { .. })
    ));

    // Another kernel (5x5, padding 2: same shapes).
    let mut kernel = parent.clone();
    if let Op::Conv2d(c) = &mut kernel.layers[3].op {
        c.kernel = [5, 5];
        c.padding = [2, 2];
    }
    kernel.complete().unwrap();
    let e = err_text(t.predict(&kernel).unwrap_err());
    assert!(e.contains("layer conv3 differs"), "{e}");
    assert!(
        e.contains("kernel: latency table 3x3, architecture 5x5"),
        "{e}"
    );
    assert!(e.contains("padding"), "{e}");

    // Another stride.
    let mut stride = parent.clone();
    if let Op::Conv2d(c) = &mut stride.layers[3].op {
        c.stride = [2, 2];
    }
    stride.complete().unwrap();
    let e = err_text(t.predict(&stride).unwrap_err());
    assert!(
        e.contains("layer conv3 differs") && e.contains("stride"),
        "{e}"
    );

    // Another input size of a layer: without pool1, conv3 reads 28x28.
    let mut no_pool = parent.clone();
    no_pool.layers.remove(2);
    for l in no_pool.layers.iter_mut().skip(2) {
        l.inputs = l.inputs.iter().map(|v| v - 1).collect();
    }
    no_pool.complete().unwrap();
    let e = err_text(t.predict(&no_pool).unwrap_err());
    assert!(
        e.contains("layer conv3 differs")
            && e.contains("input size: latency table 14x14, architecture 28x28"),
        "{e}"
    );

    // Another model.
    let mut other = parent.clone();
    other.name = "resnet20".into();
    let err = t.predict(&other).unwrap_err();
    assert_eq!(err.table_to_profile(), Some(("resnet20", "cortex-m7-qemu")));
    let e = err_text(err);
    assert!(
        e.contains("profiled for model vgg-small, not resnet20")
            && e.contains("a table of model resnet20 on board cortex-m7-qemu"),
        "{e}"
    );

    // Another input image.
    let mut input: Arch = parent.clone();
    input.input.height = 32;
    input.input.width = 32;
    input.complete().unwrap();
    let e = err_text(t.predict(&input).unwrap_err());
    assert!(e.contains("input 1x28x28") && e.contains("1x32x32"), "{e}");

    // Counts that cannot change in this model.
    let e = err_text(t.lookup("conv1", 3, 8).unwrap_err());
    assert!(e.contains("profiled at 1 input channels only"), "{e}");
    let e = err_text(t.lookup("fc", 64, 12).unwrap_err());
    assert!(e.contains("profiled at 10 output channels only"), "{e}");
    assert!(matches!(
        t.lookup("pool1", 8, 9),
        Err(LatencyError::ChannelsDiffer { .. })
    ));
    assert!(matches!(
        t.lookup("conv2", 0, 9),
        Err(LatencyError::ZeroChannels { .. })
    ));

    // Unknown and unprofilable boards.
    let e = err_text(
        profile(
            &parent,
            "no-such-board",
            &GridOptions::default(),
            &Default::default(),
        )
        .unwrap_err(),
    );
    assert!(
        e.contains("unknown board \"no-such-board\"") && e.contains("cortex-m4-qemu"),
        "{e}"
    );
    let e = err_text(
        profile(
            &parent,
            "host",
            &GridOptions::default(),
            &Default::default(),
        )
        .unwrap_err(),
    );
    assert!(e.contains("board host cannot make a latency table"), "{e}");
    let one_point = GridOptions {
        in_points: 1,
        ..Default::default()
    };
    assert!(matches!(
        profile(&parent, "cortex-m4-qemu", &one_point, &Default::default()),
        Err(LatencyError::Options(_))
    ));
}

#[test]
fn damaged_or_invalid_files_are_refused_naming_the_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("latency.json");
    let shown = path.display().to_string();

    let e = err_text(LatencyTable::load(&path).unwrap_err());
    assert!(e.starts_with(&shown), "{e}");

    std::fs::write(&path, "{ \"format\": \"dnal-latency\", ").unwrap();
    let e = err_text(LatencyTable::load(&path).unwrap_err());
    assert!(e.starts_with(&shown) && e.contains("invalid JSON"), "{e}");

    let good = serde_json::to_value(table()).unwrap();
    let check = |edit: &dyn Fn(&mut serde_json::Value), want: &str| {
        let mut v = good.clone();
        edit(&mut v);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let e = err_text(LatencyTable::load(&path).unwrap_err());
        assert!(
            e.starts_with(&shown) && e.contains(want),
            "want {want:?} in {e}"
        );
    };
    check(&|v| v["version"] = 2.into(), "unknown version 2");
    check(&|v| v["format"] = "dnal-export".into(), "format");
    check(
        &|v| v["board"] = "no-such-board".into(),
        "board: unknown board",
    );
    check(&|v| v["unit"] = "cycles".into(), "unit: is \"cycles\"");
    check(&|v| v["clock"]["hz"] = 0.into(), "clock.hz");
    check(
        &|v| {
            v["layers"][1]["grid"]["cost"][0]
                .as_array_mut()
                .unwrap()
                .pop();
        },
        "layers[1] (conv2).grid.cost[0]: has 8 values, its axis 9",
    );
    check(
        &|v| v["layers"][1]["grid"]["in_channels"] = serde_json::json!([1, 32, 17]),
        "layers[1] (conv2).grid.in_channels: must increase strictly",
    );
    check(
        &|v| v["layers"][1]["grid"]["out_channels"] = serde_json::json!([1, 3, 4, 5, 16, 32]),
        "layers[1] (conv2).grid.out_channels: lacks 2",
    );
    check(
        &|v| v["layers"][2]["grid"]["cost"][1] = (-1.0).into(),
        "layers[2] (pool1).grid.cost[1]: is -1",
    );
    check(
        &|v| v["layers"][3]["name"] = "conv2".into(),
        "appears twice",
    );
    check(
        &|v| v["layers"][1]["grid"]["axes"] = "rows".into(),
        "invalid JSON",
    );
}

#[test]
fn huge_numbers_hostile_names_and_odd_files_are_refused_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("latency.json");
    let good = serde_json::to_value(table()).unwrap();
    let half: u64 = 1 << 63;
    let check = |edit: &dyn Fn(&mut serde_json::Value), want: &str| {
        let mut v = good.clone();
        edit(&mut v);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let start = std::time::Instant::now();
        let e = err_text(LatencyTable::load(&path).unwrap_err());
        assert!(start.elapsed().as_secs() < 5, "{want}: slow");
        assert!(e.contains(want), "want {want:?} in {e}");
    };
    // out_block 2^63 made the check loop 2^63 times and a lookup allocate as much.
    check(
        &|v| v["layers"][1]["grid"]["out_block"] = half.into(),
        "grid.out_block: is 9223372036854775808, must be 1 to 65536",
    );
    // `last + 1` wrapped.
    check(
        &|v| v["layers"][1]["grid"]["out_channels"] = serde_json::json!([1, 2, 3, u64::MAX]),
        "above 65536",
    );
    check(
        &|v| v["layers"][2]["grid"]["channels"] = serde_json::json!([1, half + 1]),
        "above 65536",
    );
    check(
        &|v| v["layers"][1]["structure"]["padding"] = serde_json::json!([half, half]),
        "structure.padding[0]",
    );
    check(
        &|v| v["layers"][1]["structure"]["input_height"] = u64::MAX.into(),
        "structure.input_height",
    );
    check(
        &|v| v["input"]["channels"] = (half + 1).into(),
        "input: 9223372036854775809x28x28 is outside the export limits",
    );
    check(
        &|v| v["layers"][1]["name"] = "x\nfn evil() {}".into(),
        "layers[1].name: \"x\\nfn evil() {}\" holds '\\n'",
    );
    check(&|v| v["model"] = "a*/b".into(), "model: \"a*/b\" holds '*'");

    // Not regular files, or far too large: refused before reading.
    #[cfg(unix)]
    {
        std::fs::remove_file(&path).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let e = LatencyTable::load(&path).unwrap_err();
        assert!(
            matches!(e, LatencyError::NotAFile { kind: "a FIFO", .. }),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
    }
    std::fs::create_dir(&path).unwrap();
    let e = LatencyTable::load(&path).unwrap_err();
    assert!(matches!(e, LatencyError::NotAFile { .. }), "{e}");
    std::fs::remove_dir(&path).unwrap();
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(1 << 30).unwrap();
    let e = LatencyTable::load(&path).unwrap_err();
    assert!(
        matches!(e, LatencyError::FileTooLarge { size, .. } if size == 1 << 30),
        "{e}"
    );
}

#[test]
fn a_padded_rows_marginal_input_channel_is_the_rows_mean_slope() {
    // conv2 (3x3) as an int8 SMLAD kernel reads 9 codes per input channel padded to 4: a
    // staircase in the channels. The grid's points lie at whole rows (multiples of 4
    // channels, 36 codes).
    let row = InRow {
        taps: 9,
        quantum: 4,
    };
    let (ins, outs) = (vec![1, 4, 8, 16, 32], vec![1, 2, 3, 4, 8, 16, 32]);
    let cost = |i: usize, o: usize| 100.0 + o as f64 * (50.0 + 2.0 * row.len(i) as f64);
    let mut t = table();
    let conv2 = t.layers.iter_mut().find(|l| l.name == "conv2").unwrap();
    conv2.grid = Grid::InOut {
        cost: ins
            .iter()
            .map(|&i| outs.iter().map(|&o| cost(i, o)).collect())
            .collect(),
        in_channels: ins,
        out_channels: outs,
        out_block: 4,
        in_row: Some(row),
    };
    // The lookup follows the staircase: 17 channels (156 codes) cost what the padded row
    // costs, between 16's (144) and 20's (180).
    for i in 4..=32 {
        let l = t.lookup("conv2", i, 8).unwrap();
        assert!((l.cost - cost(i, 8)).abs() < 1e-9, "{i}: {}", l.cost);
    }
    // One more input channel costs the segment's mean, 8 outputs * 2 * 36 codes / 4
    // channels between 4 and 8, at every count in it: the padded row grows unevenly there
    // (by 12, 8, 8 and 8 codes), the mean does not.
    for i in 5..=8 {
        let m = t.marginal("conv2", i, 8).unwrap();
        let mean = (cost(8, 8) - cost(4, 8)) / 4.0;
        assert!((m.per_in_channel - mean).abs() < 1e-9, "{i}: {m:?}");
        assert!((m.per_in_channel - 144.0).abs() < 1e-9, "{i}: {m:?}");
    }
}

/// A table says which firmware code measured it (`code`); one of other code, or from a dnal
/// that did not record it, is noted wherever it predicts a measured network, naming both codes
/// and the fix.
#[test]
fn a_table_of_other_firmware_code_is_noted_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("latency.json");
    let mut ours = table();
    ours.code = Some(code_stamp().to_string());
    ours.write(&path).unwrap();
    let ours = LatencyTable::load(&path).unwrap();
    assert_eq!(ours.code.as_deref(), Some(code_stamp()));
    assert_eq!(ours.code_note(), None);

    let mut other = ours.clone();
    other.code = Some("dnal-firmware 0.0.9, code 0123456789abcdef".into());
    let note = other.code_note().unwrap();
    for part in [
        &path.display().to_string(),
        "0123456789abcdef",
        code_stamp(),
        "dnal profile --board cortex-m7-qemu",
    ] {
        assert!(note.contains(part), "{part:?} missing from: {note}");
    }
    let mut unrecorded = ours.clone();
    unrecorded.code = None;
    let old = unrecorded.code_note().unwrap();
    assert!(old.contains("did not record its firmware code"), "{old}");

    // The note travels with every check of a prediction against a measurement.
    let prediction = other.predict(&vgg_small_arch()).unwrap();
    let check = other
        .check_and_learn(&prediction, prediction.total * 1.01, "a test")
        .unwrap();
    assert_eq!(check.note.as_deref(), Some(note.as_str()));
    let check = ours
        .check_and_learn(&prediction, prediction.total * 1.01, "a test")
        .unwrap();
    assert_eq!(check.note, None);
}
