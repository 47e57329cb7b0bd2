//! The GPU path runs in CI: a few training steps of a small gated network on burn's wgpu
//! backend, which on a machine without a GPU runs on lavapipe (Debian's mesa-vulkan-drivers).

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Int, Tensor, TensorData};
use dnal::backend::Backend;
use dnal_models::{Activation, GateMode, GatedNetConfig, Op, Shape3, SpecBuilder};

#[test]
fn a_few_training_steps_on_wgpu_lower_the_loss_and_agree_with_the_cpu() {
    // wgpu wants a private runtime folder; without one it only warns, but keep the log clean.
    let runtime = tempfile::tempdir().unwrap();
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: set before any thread of this test binary reads the environment.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", runtime.path()) };
    }
    let mut b = SpecBuilder::new("tiny", Shape3::new(1, 8, 8), 4);
    let c1 = b.conv("conv1", 0, 8, 3, 1, Activation::Relu);
    let p = b.push(
        "pool",
        Op::MaxPool {
            kernel: 2,
            stride: 2,
        },
        vec![c1],
    );
    let c2 = b.conv("conv2", p, 8, 3, 1, Activation::Relu);
    let g = b.push("gap", Op::GlobalAvgPool, vec![c2]);
    b.push(
        "fc",
        Op::Linear {
            out_features: 4,
            activation: Activation::None,
        },
        vec![g],
    );
    let spec = b.finish();

    let gpu = Backend::Wgpu.device().expect("wgpu is built in").autodiff();
    gpu.seed(3);
    let mut net = GatedNetConfig::new(spec).init(&gpu).unwrap();
    // Inputs whose class is the quadrant holding a bright pixel: learnable in a few steps.
    let batch = 16;
    let mut pixels = vec![0.0f32; batch * 64];
    let mut labels = Vec::new();
    for i in 0..batch {
        let class = i % 4;
        let (row, col) = ((class / 2) * 4 + 1, (class % 2) * 4 + 2);
        pixels[i * 64 + row * 8 + col] = 3.0;
        labels.push(class as i64);
    }
    let x = Tensor::<4>::from_data(TensorData::new(pixels.clone(), [batch, 1, 8, 8]), &gpu);
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &gpu);
    let loss_fn = CrossEntropyLossConfig::new().init(&gpu);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init();
    let mut losses = Vec::new();
    for _ in 0..8 {
        let loss = loss_fn.forward(
            net.forward(x.clone(), GateMode::Soft { delta: 1.0 }),
            y.clone(),
        );
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(0.05, net, grads);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        losses.last() < losses.first(),
        "the loss did not fall: {losses:?}"
    );

    // The same trained weights give the same logits on the CPU backend.
    let gpu_logits = net
        .valid()
        .forward(x.clone().detach(), GateMode::Off)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let cpu = Backend::Cpu.device().unwrap();
    let cpu_net = net.valid().to_device(&cpu);
    let cpu_x = Tensor::<4>::from_data(TensorData::new(pixels, [batch, 1, 8, 8]), &cpu);
    let cpu_logits = cpu_net
        .forward(cpu_x, GateMode::Off)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let diff = gpu_logits
        .iter()
        .zip(&cpu_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-3, "wgpu and cpu logits differ by {diff}");
}
