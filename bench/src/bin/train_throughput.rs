//! Training throughput of one model on one backend: images per second of full SGD steps
//! (forward, cross entropy, backward, momentum update) on random data.
//!
//! `bench/throughput.sh` runs it next to PyTorch on the same network (it writes the spec
//! with `--spec-out` for the PyTorch script to build the same layers).
//!
//! ```text
//! cargo run --release -p dnal-bench --bin train_throughput -- --model vgg-small --input 1,28,28 --backend cpu
//! cargo run --release -p dnal-bench --bin train_throughput -- --model mobilenetv2 --width 0.35 --input 1,28,28
//! ```

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use dnal::backend::Backend;
use dnal_models::{GateMode, GatedNetConfig, Shape3, model_spec_at_width};

struct Args {
    model: String,
    width: Option<f64>,
    input: Shape3,
    classes: usize,
    batch: usize,
    steps: usize,
    warmup: usize,
    backend: Backend,
    gates: bool,
    spec_out: Option<String>,
    phases: bool,
}

fn parse() -> Args {
    let mut args = Args {
        model: "vgg-small".into(),
        width: None,
        input: Shape3::new(1, 28, 28),
        classes: 10,
        batch: 64,
        steps: 20,
        warmup: 3,
        backend: Backend::Cpu,
        gates: false,
        spec_out: None,
        phases: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => args.model = value(),
            "--width" => args.width = Some(value().parse().unwrap()),
            "--input" => {
                let v: Vec<usize> = value().split(',').map(|x| x.parse().unwrap()).collect();
                args.input = Shape3::new(v[0], v[1], v[2]);
            }
            "--classes" => args.classes = value().parse().unwrap(),
            "--batch" => args.batch = value().parse().unwrap(),
            "--steps" => args.steps = value().parse().unwrap(),
            "--warmup" => args.warmup = value().parse().unwrap(),
            "--backend" => args.backend = value().parse().unwrap(),
            "--gates" => args.gates = true,
            "--phases" => args.phases = true,
            "--spec-out" => args.spec_out = Some(value()),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn main() {
    let args = parse();
    if std::env::var_os("DNAL_DEFAULT_MALLOC").is_none() {
        dnal::allocator::keep_freed_memory();
    }
    let spec = model_spec_at_width(&args.model, args.input, args.classes, args.width)
        .expect("a known model");
    if let Some(path) = &args.spec_out {
        std::fs::write(path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    }
    let device = args.backend.device().expect("backend available").autodiff();
    device.seed(0);
    let mut net = GatedNetConfig::new(spec).init(&device).unwrap();
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let s = args.input;
    let x = Tensor::<4>::random(
        [args.batch, s.channels, s.height, s.width],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let labels: Vec<i64> = (0..args.batch).map(|i| (i % args.classes) as i64).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [args.batch]), &device);
    let mode = if args.gates {
        GateMode::Soft { delta: 1.0 }
    } else {
        GateMode::Off
    };
    let mut started = Instant::now();
    // Milliseconds of each step's forward (to the loss), backward and update, for `--phases`.
    let mut phases: Vec<[f64; 3]> = Vec::new();
    for step in 0..args.warmup + args.steps {
        if step == args.warmup {
            started = Instant::now();
        }
        let t0 = Instant::now();
        let logits = net.forward(x.clone(), mode);
        let loss = loss_fn.forward(logits, y.clone());
        // Reading the loss waits for the step, as a training loop that logs it does.
        let _ = loss.clone().into_scalar::<f32>();
        let t1 = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let t2 = Instant::now();
        net = optim.step(0.01, net, grads);
        if args.phases {
            // Only the CPU backend runs eagerly enough for these to mean what they say.
            let _ = net.convs[0].conv.weight.val().sum().into_scalar::<f32>();
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            if step >= args.warmup {
                phases.push([ms(t0, t1), ms(t1, t2), ms(t2, Instant::now())]);
            }
        }
    }
    if args.phases {
        let median = |i: usize| {
            let mut v: Vec<f64> = phases.iter().map(|p| p[i]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        eprintln!(
            "median ms per step: forward {:.2}, backward {:.2}, update {:.2}",
            median(0),
            median(1),
            median(2)
        );
    }
    // The last update must have run before the clock stops.
    let _ = net.convs[0].conv.weight.val().sum().into_scalar::<f32>();
    let seconds = started.elapsed().as_secs_f64();
    let ips = (args.steps * args.batch) as f64 / seconds;
    println!(
        "{{\"framework\": \"burn\", \"backend\": \"{}\", \"model\": \"{}\", \"batch\": {}, \"steps\": {}, \"gates\": {}, \"images_per_second\": {:.2}, \"macs\": {}}}",
        args.backend,
        args.model,
        args.batch,
        args.steps,
        args.gates,
        ips,
        net.flops()
    );
    let _ = net.valid();
}
