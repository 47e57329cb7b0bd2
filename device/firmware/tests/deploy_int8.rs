//! int8 firmware: a quantised network with every op (dense, depthwise and pointwise conv, a
//! residual add, max, average and global pooling, linear), built for Cortex-M4, Cortex-M7
//! (QEMU mps2 machines; `SMLAD` kernels) and aarch64 (qemu-aarch64; `SDOT` kernels), must
//! give the integer reference's codes bit for bit, with an activation arena a quarter of the
//! f32 firmware's.
//!
//! Needs what deploy_qemu.rs needs (QEMU, the plugin's gcc, the rustup targets).

use dnal_export::int8::{Int8Export, ValueRanges, quantize};
use dnal_export::{Export, Precision, Shape3};
use dnal_firmware::DeployRequest;
use dnal_firmware::board::Int8Simd;
use dnal_firmware::codegen::Network;
use dnal_firmware::deploy::{deploy, synthetic_images};
use dnal_firmware::synth::{random_export, tiny_cnn_arch, vgg_small_arch, with_channels};

fn shared_target_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dnal-firmware")
}

/// `export` quantised on the ranges of the synthetic images from the `skip`th to the eighth
/// (other images than the ones embedded, which start at the first: some of their values
/// saturate), written to `dir`.
fn quantised(export: &Export, skip: usize, dir: &std::path::Path) -> Int8Export {
    let images = synthetic_images(export.input_len(), 8);
    let ranges = ValueRanges::of_images(export, images.iter().skip(skip));
    let int8 = quantize(export, &ranges, serde_json::Value::Null).unwrap();
    int8.write(dir).unwrap();
    int8
}

/// The tiny network on `side` x `side` images with `channels` channels out of conv1 and pw,
/// quantised, deployed to `board` and run.
fn deploy_int8(board: &str, side: usize, channels: usize) {
    let tmp = tempfile::tempdir().unwrap();
    // An odd number of channels where the tiny network has eight: the depthwise layer's 63
    // (or 27) codes and other odd-length arrays then sit before the SMLAD layers' weights in
    // flash, which `LDRD` reads a word at a time and faults on if they are not word aligned.
    let odd = [("conv1", channels), ("pw", channels)].map(|(name, c)| (name.to_string(), c));
    let mut tiny = tiny_cnn_arch(&format!("tiny8-{side}-{board}"));
    tiny.input = Shape3::new(3, side, side);
    let arch = with_channels(&tiny, &odd.into()).unwrap();
    let export = random_export(arch, 21).unwrap();
    let dir = tmp.path().join("export8");
    let int8 = quantised(&export, 5, &dir);

    let mut req = DeployRequest::new(&dir, board, tmp.path().join("fw"));
    req.run = true;
    req.firmware_target_dir = Some(shared_target_dir());
    req.images = synthetic_images(export.input_len(), 4);
    let report = deploy(&req).unwrap_or_else(|e| panic!("{board}: {e}"));
    assert_eq!(report.precision, Precision::Int8);
    let parity = report.parity.as_ref().unwrap();
    assert_eq!(parity.images, 4);
    assert_eq!(parity.max_abs_diff, 0.0, "{board}: {parity:?}");
    assert!(parity.within_tolerance, "{board}: {parity:?}");
    // The logits are codes, and not all the same (the network computes something).
    let logits = &report.logits;
    assert!(
        logits
            .iter()
            .flatten()
            .all(|v| v.fract() == 0.0 && (-128.0..=127.0).contains(v))
    );
    assert!(
        logits.iter().flatten().any(|v| *v != logits[0][0]),
        "{logits:?}"
    );
    // One byte per activation: the int8 plan is the f32 one's in values (a quarter of its
    // bytes), plus the SIMD convolutions' padded input copies as scratch (SMLAD on
    // Cortex-M, SDOT on aarch64).
    let values = dnal_firmware::codegen::plan_memory(export.summary()).arena_len;
    assert_eq!(Network::Int8(&int8).plan(Int8Simd::None).arena_len, values);
    let simd = dnal_firmware::board::board(board).unwrap().int8_simd();
    assert_ne!(simd, Int8Simd::None, "{board}");
    assert_eq!(
        report.arena_bytes,
        Network::Int8(&int8).plan(simd).arena_len as u64
    );
    assert!(
        report.arena_bytes < values as u64 * 2,
        "{board}: {}",
        report.arena_bytes
    );
    assert_eq!(report.images_bytes, 4 * export.input_len() as u64);
    let cost = report.cost.as_ref().unwrap();
    assert!(cost.per_inference > 0.0, "{board}: {cost:?}");
    // The board's SIMD kernels are the ones that ran: the convolutions call them.
    let model = std::fs::read_to_string(tmp.path().join("fw/src/model.rs")).unwrap();
    let calls = |kernel: &str| model.matches(&format!("kernels::{kernel}::<")).count();
    match simd {
        Int8Simd::Dsp { .. } => {
            // conv1, pw and conv2 dense; dw depthwise 3x3.
            assert_eq!(calls("conv2d_dsp"), 3, "{board}");
            assert_eq!(calls("depthwise3x3_dsp"), 1, "{board}");
        }
        Int8Simd::Dot => {
            assert_eq!(calls("conv2d_sdot"), 3, "{board}");
            assert_eq!(calls("depthwise3x3_padded"), 1, "{board}");
        }
        Int8Simd::None => unreachable!(),
    }
}

#[test]
fn int8_firmware_matches_the_integer_reference_on_cortex_m4() {
    deploy_int8("cortex-m4-qemu", 12, 7);
}

#[test]
fn int8_firmware_matches_the_integer_reference_on_cortex_m7() {
    deploy_int8("cortex-m7-qemu", 12, 7);
}

#[test]
fn int8_firmware_matches_the_integer_reference_on_aarch64() {
    deploy_int8("aarch64-qemu", 12, 7);
}

// Rows of 15 pixels: the depthwise layer runs its rows of pixel pairs in assembly
// (`arm/dw3x3.s`, rows of at least 13), the last pixel's partner in the slack. And 3
// channels into pw: its sums run the one-step assembly (`arm/pw_sums.s`), where 7 run the
// two-step one.
#[test]
fn int8_firmware_on_wider_images_and_fewer_channels_matches_on_cortex_m4() {
    deploy_int8("cortex-m4-qemu", 15, 3);
}

#[test]
fn int8_firmware_on_wider_images_and_fewer_channels_matches_on_cortex_m7() {
    deploy_int8("cortex-m7-qemu", 15, 3);
}

/// A pruned vgg-small, int8, deployed with `winograd` to `board`: the 3x3 layers where it
/// pays (conv2, conv3 and conv5: odd and even counts of channel pairs, planes of 28, 14 and
/// 7) run Winograd's F(2x2, 3x3), the others (conv1 from one channel, conv4 from 7) the
/// direct kernel, and all give the integer reference's codes bit for bit, for a larger
/// arena than the direct kernels take.
fn deploy_int8_winograd(board: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let counts = [
        ("conv1", 9),
        ("conv2", 10),
        ("conv3", 7),
        ("conv4", 8),
        ("conv5", 11),
    ]
    .map(|(name, c)| (name.to_string(), c));
    let arch = with_channels(&vgg_small_arch(), &counts.into()).unwrap();
    let export = random_export(arch, 5).unwrap();
    let dir = tmp.path().join("export8");
    let int8 = quantised(&export, 4, &dir);

    let mut req = DeployRequest::new(&dir, board, tmp.path().join("fw"));
    req.run = true;
    req.firmware_target_dir = Some(shared_target_dir());
    req.images = synthetic_images(export.input_len(), 3);
    req.winograd = true;
    let report = deploy(&req).unwrap_or_else(|e| panic!("{board}: {e}"));
    assert!(report.winograd);
    let parity = report.parity.as_ref().unwrap();
    assert_eq!(parity.max_abs_diff, 0.0, "{board}: {parity:?}");
    assert!(
        report
            .logits
            .iter()
            .flatten()
            .any(|v| *v != report.logits[0][0]),
        "{:?}",
        report.logits
    );
    let model = std::fs::read_to_string(tmp.path().join("fw/src/model.rs")).unwrap();
    assert_eq!(
        model.matches("kernels::conv2d_winograd::<").count(),
        3,
        "{board}"
    );
    assert_eq!(
        model.matches("kernels::conv2d_dsp::<").count(),
        2,
        "{board}"
    );
    let simd = dnal_firmware::board::board(board).unwrap().int8_simd();
    let direct = Network::Int8(&int8).plan(simd).arena_len as u64;
    assert_eq!(
        report.arena_bytes,
        Network::Int8(&int8)
            .plan(simd.with_winograd(true))
            .arena_len as u64
    );
    assert!(
        report.arena_bytes > direct,
        "{board}: {}",
        report.arena_bytes
    );
}

#[test]
fn int8_firmware_by_winograd_matches_the_integer_reference_on_cortex_m4() {
    deploy_int8_winograd("cortex-m4-qemu");
}

#[test]
fn int8_firmware_by_winograd_matches_the_integer_reference_on_cortex_m7() {
    deploy_int8_winograd("cortex-m7-qemu");
}

/// Winograd is refused where it cannot run, naming why: f32 firmware, and a board whose
/// int8 kernels are not the DSP ones.
#[test]
fn winograd_is_refused_for_f32_and_boards_without_dsp() {
    let tmp = tempfile::tempdir().unwrap();
    let export = random_export(tiny_cnn_arch("tiny-wino"), 3).unwrap();
    let f32_dir = tmp.path().join("export");
    export.write(&f32_dir).unwrap();
    let mut req = DeployRequest::new(&f32_dir, "cortex-m7-qemu", tmp.path().join("fw"));
    req.winograd = true;
    let err = deploy(&req).unwrap_err().to_string();
    assert!(
        err.contains("Winograd") && err.contains("dnal quantize"),
        "{err}"
    );
    let int8_dir = tmp.path().join("export8");
    quantised(&export, 6, &int8_dir);
    let mut req = DeployRequest::new(&int8_dir, "aarch64-qemu", tmp.path().join("fw"));
    req.winograd = true;
    let err = deploy(&req).unwrap_err().to_string();
    assert!(
        err.contains("aarch64-qemu has none") && err.contains("cortex-m7-qemu"),
        "{err}"
    );
    assert!(!tmp.path().join("fw").exists());
}

/// Winograd's transforms that take the arena past the board's RAM are refused before anything
/// is written, with the arena the direct convolutions would take.
#[test]
fn a_winograd_arena_over_the_board_says_what_the_direct_one_takes() {
    let tmp = tempfile::tempdir().unwrap();
    // conv2 reads 96 channels on 28x28: its transformed weights take 48 channel pairs x 6 KiB.
    let counts = [("conv1", 96), ("conv2", 96)].map(|(name, c)| (name.to_string(), c));
    let arch = with_channels(&vgg_small_arch(), &counts.into()).unwrap();
    let export = random_export(arch, 7).unwrap();
    let dir = tmp.path().join("export8");
    let int8 = quantised(&export, 6, &dir);
    let board = dnal_firmware::board::board("cortex-m4-qemu").unwrap();
    let direct = Network::Int8(&int8).plan(board.int8_simd()).arena_len as u64;
    // Directly it fits.
    assert!(
        direct + board.stack_allowance() < board.ram_bytes,
        "{direct}"
    );

    let mut req = DeployRequest::new(&dir, board.name, tmp.path().join("fw"));
    req.winograd = true;
    let err = deploy(&req).unwrap_err().to_string();
    assert!(
        err.contains("does not fit cortex-m4-qemu: RAM")
            && err.contains(&format!(
                "is {direct} bytes with the 3x3 convolutions run directly"
            )),
        "{err}"
    );
    assert!(!tmp.path().join("fw").exists());
}

/// Replaces every weight tensor's codes in the int8 export in `dir` by `code(i)` (the i-th
/// code of the file, counting across tensors) and every bias by `bias(i)`.
fn recode(dir: &std::path::Path, code: impl Fn(usize) -> i8, bias: impl Fn(usize) -> i32) {
    use safetensors::{Dtype, SafeTensors, tensor::TensorView};
    let path = dir.join("weights.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let (mut codes, mut biases) = (0, 0);
    let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = if name.ends_with(".weight") {
                assert_eq!(view.dtype(), Dtype::I8, "{name}");
                let n = view.data().len();
                codes += n;
                (codes - n..codes).map(|i| code(i) as u8).collect()
            } else if name.ends_with(".bias") {
                assert_eq!(view.dtype(), Dtype::I32, "{name}");
                let n = view.data().len() / 4;
                biases += n;
                (biases - n..biases)
                    .flat_map(|i| bias(i).to_le_bytes())
                    .collect()
            } else {
                view.data().to_vec()
            };
            (name, view.dtype(), view.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// The `i`-th weight code, or bias, of a [`recode`]d export.
type CodeAt = fn(usize) -> i8;
type BiasAt = fn(usize) -> i32;

/// Per-layer instruction counts of the int8 export in `dir` on `board`, one image.
fn int8_layer_costs(dir: &std::path::Path, board: &str, input_len: usize) -> Vec<f64> {
    let out = tempfile::tempdir().unwrap();
    let mut req = DeployRequest::new(dir, board, out.path().join("fw"));
    req.run = true;
    req.firmware_target_dir = Some(shared_target_dir());
    req.images = synthetic_images(input_len, 1);
    let report = deploy(&req).unwrap_or_else(|e| panic!("{board}: {e}"));
    let cost = report.cost.unwrap();
    cost.per_layer.iter().map(|l| l.cost).collect()
}

/// An int8 network's cost is its architecture's, whatever its codes: the compiler cannot see
/// the weight codes and biases (statics defined in assembly), so with them replaced (all
/// zero, then pseudo-random) the tiny network costs what it cost, on every layer. Its zero
/// points and requantisation stay: they are constants of the code.
#[test]
fn int8_cost_does_not_depend_on_the_weight_codes_or_biases() {
    let tmp = tempfile::tempdir().unwrap();
    let export = random_export(tiny_cnn_arch("tiny8-codes"), 23).unwrap();
    let dir = tmp.path().join("export8");
    quantised(&export, 5, &dir);
    fn pseudo_random(i: usize) -> i32 {
        ((i.wrapping_mul(2_654_435_761) >> 7) % 255) as i32
    }
    let variants: [(&str, CodeAt, BiasAt); 2] = [
        ("zeros", |_| 0, |_| 0),
        (
            "pseudo-random",
            |i| (pseudo_random(i) - 127) as i8,
            |i| pseudo_random(i) * 40 - 5_000,
        ),
    ];
    for board in ["cortex-m7-qemu", "aarch64-qemu"] {
        let want = int8_layer_costs(&dir, board, export.input_len());
        for (what, code, bias) in variants {
            let copy = tmp.path().join(format!("{board}-{what}"));
            std::fs::create_dir_all(&copy).unwrap();
            for file in ["arch.json", "weights.safetensors"] {
                std::fs::copy(dir.join(file), copy.join(file)).unwrap();
            }
            recode(&copy, code, bias);
            let got = int8_layer_costs(&copy, board, export.input_len());
            assert_eq!(got, want, "{board}: {what} codes and biases");
        }
    }
}
