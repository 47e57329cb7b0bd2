//! The `dnal` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use dnal::arch_cost::CostWeighting;
use dnal::backend::Backend;
use dnal::budget::Budget;
use dnal::config::SearchConfig;
use dnal::progress::TerminalProgress;
use dnal_models::GatePosition;

/// Find small, fast CNNs with DNAL and deploy them to microcontrollers.
///
/// A search trains a CNN (weight stage), learns which channels to keep with scaled-sigmoid
/// gates while delta grows from 1 to 1e4 (gate stage), removes the closed channels for real,
/// finetunes the smaller network and exports it (arch.json + weights.safetensors with batch
/// norm folded) for `dnal eval` and `dnal deploy`.
#[derive(Parser, Debug)]
#[command(name = "dnal", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Search a pruned network: weight stage, gate stage, prune, finetune, export.
    ///
    /// Example, the default small VGG on Fashion-MNIST:
    ///   dnal search --dataset fashion-mnist --out runs/fmnist
    /// A quick look on a subset:
    ///   dnal search --dataset fashion-mnist --out runs/quick --train-limit 5000 --test-limit 1000 --epochs-weights 3 --epochs-gates 2 --epochs-finetune 2
    /// Continue a killed run:
    ///   dnal search --resume runs/fmnist
    Search(SearchArgs),
    /// Evaluate an export on its dataset's test set (reproduces the reported top-1).
    Eval(EvalArgs),
    /// Generate a no_std firmware crate from an export, build it for a board, and with --run
    /// run it (QEMU for the *-qemu boards), measure its cost and compare its logits with burn's.
    ///
    /// Example:
    ///   dnal deploy --export runs/fmnist --board cortex-m7-qemu --out fw/m7 --run
    Deploy(DeployArgs),
    /// List the models, datasets and boards.
    List,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
struct SearchArgs {
    /// Continue the search in this folder where it stopped (all other options are taken from
    /// its checkpoint).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "dataset"])]
    resume: Option<PathBuf>,
    /// Output folder (new or empty): checkpoints, arch.json, weights.safetensors, report.json.
    #[arg(long, value_name = "DIR", required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Dataset: fashion-mnist, mnist, cifar10, folder (an ImageNet-style tree) or synthetic.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// Folder holding the dataset's files (fashion-mnist defaults to
    /// /usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Model to search (`dnal list` shows them); the default suits 28x28 inputs.
    #[arg(long, default_value = dnal_models::DEFAULT_MODEL)]
    model: String,
    /// Use only the first N training images.
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Epochs of the weight stage (gates off, SGD with a cosine schedule).
    #[arg(long, value_name = "A", default_value_t = SearchConfig::default().epochs_weights)]
    epochs_weights: usize,
    /// Epochs of the gate stage (weights frozen, delta 1 -> 1e4, only the gates learn).
    #[arg(long, value_name = "B", default_value_t = SearchConfig::default().epochs_gates)]
    epochs_gates: usize,
    /// Epochs of finetuning the pruned network.
    #[arg(long, value_name = "C", default_value_t = SearchConfig::default().epochs_finetune)]
    epochs_finetune: usize,
    /// lambda_a: how hard the gate stage pushes channels out; larger prunes more. The
    /// per-channel costs c_l average 1, so lambda_a has the paper's scale (1e-5 to 5e-4 for
    /// VGG16 and ResNet-56 on CIFAR-10).
    #[arg(long, value_name = "X", default_value_t = SearchConfig::default().lambda)]
    lambda: f64,
    /// What a channel costs in the architecture loss: uniform (the paper: every channel 1)
    /// or flops (the MACs one channel costs, normalised).
    #[arg(long, default_value_t = SearchConfig::default().cost)]
    cost: CostWeighting,
    /// cpu (burn's flex), ndarray, wgpu (GPU, or lavapipe on a CPU) or cuda (build with
    /// --features cuda).
    #[arg(long, default_value_t = SearchConfig::default().backend)]
    backend: Backend,
    /// Seeds the weights, the data order and the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per training step.
    #[arg(long, default_value_t = SearchConfig::default().batch_size)]
    batch_size: usize,
    /// Peak learning rate of the weight stage.
    #[arg(long, default_value_t = SearchConfig::default().lr)]
    lr: f64,
    /// Learning rate of the gates (constant).
    #[arg(long, default_value_t = SearchConfig::default().lr_gates)]
    lr_gates: f64,
    /// Peak learning rate of finetuning.
    #[arg(long, default_value_t = SearchConfig::default().lr_finetune)]
    lr_finetune: f64,
    /// SGD weight decay (weight stage and finetuning).
    #[arg(long, default_value_t = SearchConfig::default().weight_decay)]
    weight_decay: f64,
    /// delta at the end of the gate stage.
    #[arg(long, default_value_t = SearchConfig::default().delta_end)]
    delta_end: f64,
    /// Prune to at most this many multiply-accumulates per image (5500000, 5.5M, 800K): the
    /// search steers lambda_a from --lambda during the gate stage and fits the kept channels
    /// to land at or under the budget.
    #[arg(long, value_name = "MACS", value_parser = parse_count)]
    flops_budget: Option<f64>,
    /// Where the gate sits: after-bn (Conv-BN-SS-ReLU, the paper's best), before-bn or
    /// after-activation (the paper's ablations).
    #[arg(long, default_value = "after-bn", value_parser = parse_gate_position)]
    gate_position: GatePosition,
}

fn parse_count(s: &str) -> Result<f64, String> {
    let (number, scale) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1e3),
        Some('M') => (&s[..s.len() - 1], 1e6),
        Some('G') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    number
        .parse::<f64>()
        .map(|x| x * scale)
        .map_err(|_| format!("{s:?} is not a count; write e.g. 5500000, 5.5M or 800K"))
}

fn parse_gate_position(s: &str) -> Result<GatePosition, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("unknown gate position {s:?}; choose after-bn, before-bn or after-activation")
    })
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// The export folder (what `dnal search --out` wrote).
    #[arg(long, value_name = "DIR")]
    export: PathBuf,
    /// Folder holding the dataset (default: the one the search used).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Evaluate the first N test images (default: as many as the search evaluated).
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Where to run the forward pass.
    #[arg(long, default_value_t = Backend::Cpu)]
    backend: Backend,
}

#[derive(Args, Debug)]
struct DeployArgs {
    /// The export folder (what `dnal search --out` wrote).
    #[arg(long, value_name = "DIR")]
    export: PathBuf,
    /// The board: host, cortex-m4-qemu, cortex-m7-qemu, aarch64-qemu, or a real board by chip
    /// (stm32f746zg, nrf52840; needs probe-rs and a probe to run). `dnal list` shows them all.
    #[arg(long)]
    board: String,
    /// Folder for the firmware crate, the built ELF and deploy.json.
    #[arg(long, value_name = "FW_DIR")]
    out: PathBuf,
    /// Run the firmware and measure it (otherwise build only).
    #[arg(long)]
    run: bool,
    /// Test images of the export's dataset to embed, run and compare with burn's logits.
    #[arg(long, default_value_t = 8)]
    images: usize,
    /// Runs of the firmware; 2 or more also checks that the cost repeats exactly.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Folder holding the dataset, if not where the search found it.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    dnal::allocator::keep_freed_memory();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Search(args) => search(args),
        Command::Eval(args) => eval(args),
        Command::Deploy(args) => deploy(args),
        Command::List => {
            println!("models (--model):");
            for (name, what) in dnal_models::MODELS {
                println!("  {name:<10} {what}");
            }
            println!("datasets (--dataset):");
            for name in dnal_datasets::DATASET_NAMES {
                println!("  {name}");
            }
            println!("boards (--board):");
            for name in dnal_device::board::board_names() {
                println!("  {name}");
            }
            Ok(())
        }
    }
}

fn search(args: SearchArgs) -> Result<()> {
    let mut progress = TerminalProgress::new();
    if let Some(dir) = args.resume {
        dnal::search::resume(&dir, &mut progress)
            .with_context(|| format!("resuming the search in {}", dir.display()))?;
        return Ok(());
    }
    let out = args.out.expect("clap requires --out without --resume");
    let config = SearchConfig {
        dataset: args.dataset,
        data_dir: args.data_dir,
        model: args.model,
        train_limit: args.train_limit,
        test_limit: args.test_limit,
        epochs_weights: args.epochs_weights,
        epochs_gates: args.epochs_gates,
        epochs_finetune: args.epochs_finetune,
        batch_size: args.batch_size,
        lr: args.lr,
        lr_gates: args.lr_gates,
        lr_finetune: args.lr_finetune,
        weight_decay: args.weight_decay,
        lambda: args.lambda,
        cost: args.cost,
        delta_end: args.delta_end,
        gate_position: args.gate_position,
        backend: args.backend,
        seed: args.seed,
        budget: args.flops_budget.map(Budget::Flops),
        ..SearchConfig::default()
    };
    dnal::search::search(config, &out, &mut progress)
        .with_context(|| format!("searching into {}", out.display()))?;
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let result = dnal::eval::evaluate_export(
        &args.export,
        args.data_dir.as_deref(),
        args.test_limit,
        args.backend,
    )
    .with_context(|| format!("evaluating the export in {}", args.export.display()))?;
    println!(
        "{}: top-1 {:.4} ({:.2}%), top-5 {:.4} on {} test images of {}; {} MACs, {} params",
        args.export.display(),
        result.accuracy.top1,
        100.0 * result.accuracy.top1,
        result.accuracy.top5,
        result.accuracy.images,
        result.dataset,
        result.flops,
        result.params
    );
    if let Some(reported) = result.reported_top1 {
        let same = reported == result.accuracy.top1;
        println!(
            "report.json says top-1 {reported:.4}: {}",
            if same {
                "reproduced exactly"
            } else {
                "DIFFERENT"
            }
        );
    }
    Ok(())
}

fn deploy(args: DeployArgs) -> Result<()> {
    let options = dnal::deploy::DeployOptions {
        export_dir: args.export.clone(),
        board: args.board.clone(),
        out_dir: args.out.clone(),
        run: args.run,
        images: args.images,
        runs: args.runs,
        data_dir: args.data_dir,
    };
    let report = dnal::deploy::deploy_export(&options).with_context(|| {
        format!(
            "deploying {} to {} in {}",
            args.export.display(),
            args.board,
            args.out.display()
        )
    })?;
    println!(
        "{} ({}): flash {} of {} bytes, RAM {} of {} bytes (arena {} bytes, lower bound {}), firmware {}",
        report.board,
        report.cpu,
        report.flash_bytes,
        report.flash_budget_bytes,
        report.ram_bytes,
        report.ram_budget_bytes,
        report.arena_bytes,
        report.arena_lower_bound_bytes,
        report.elf.display()
    );
    if let Some(cost) = &report.cost {
        println!(
            "cost: {:.0} {} per inference ({:.2} per MAC){}",
            cost.per_inference,
            cost.unit,
            cost.per_mac,
            match report.stack_bytes {
                Some(stack) => format!(", peak stack {stack} bytes"),
                None => String::new(),
            }
        );
    }
    if let Some(parity) = &report.parity {
        println!(
            "parity with {} on {} images: max |diff| {:.3e}, top-1 agreement {:.1}%",
            parity.reference,
            parity.images,
            parity.max_abs_diff,
            100.0 * parity.top1_agreement
        );
    }
    println!("wrote {}", args.out.join("deploy.json").display());
    Ok(())
}
