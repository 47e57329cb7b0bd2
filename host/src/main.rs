//! The `dnal` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use dnal::arch_cost::CostWeighting;
use dnal::backend::Backend;
use dnal::budget::{Budget, DEFAULT_FLOPS_SHARE};
use dnal::config::{GateStageNorm, LrSchedule, SearchConfig};
use dnal::eval::Reproduction;
use dnal::preset::Preset;
use dnal::progress::TerminalProgress;
use dnal_export::Precision;
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
    /// Example, the default small VGG on Fashion-MNIST, pruned to 40% of its MACs (the default
    /// budget when neither --lambda nor a budget is given):
    ///   dnal search --dataset fashion-mnist --out runs/fmnist
    /// A quick look on a subset (4.1x fewer FLOPs at 0.6 pp below the 76.9% parent):
    ///   dnal search --dataset fashion-mnist --out runs/quick --train-limit 5000 --test-limit 1000 --epochs-weights 3 --epochs-gates 2 --epochs-finetune 2 --flops-budget 5.4M
    /// Continue a killed run:
    ///   dnal search --resume runs/fmnist
    /// Another lambda_a or budget on the same trained parent (no second weight stage):
    ///   dnal search --from-weights runs/fmnist --flops-budget 5.5M --out runs/fmnist-4x
    #[command(verbatim_doc_comment)]
    Search(SearchArgs),
    /// Evaluate an export on its dataset's test set (reproduces the reported top-1). An int8
    /// export (from `dnal quantize`) is evaluated as the board computes it, bit for bit.
    Eval(EvalArgs),
    /// Quantise an export to int8 (post-training): per-channel symmetric int8 weights, int32
    /// biases, per-tensor activation scales taken from the value ranges on training images,
    /// fixed-point requantisation as TFLite and CMSIS-NN do it (docs/export-format.md).
    /// Reports the f32 and int8 top-1 on the test set; the int8 export's report.json keeps
    /// them, and `dnal eval --export DIR8` reproduces its top-1.
    ///
    /// Example:
    ///   dnal quantize --export runs/fmnist --out runs/fmnist-int8
    #[command(verbatim_doc_comment)]
    Quantize(QuantizeArgs),
    /// Generate a no_std firmware crate from an export, build it for a board, and with --run
    /// run it (QEMU for the *-qemu boards), measure its cost and compare its logits with burn's.
    ///
    /// Example:
    ///   dnal deploy --export runs/fmnist --board cortex-m7-qemu --out fw/m7 --run
    #[command(verbatim_doc_comment)]
    Deploy(DeployArgs),
    /// Measure what every layer of a model costs on a board, over a grid of channel counts,
    /// and write the latency table that `--cost latency` and latency budgets read.
    ///
    /// Example:
    ///   dnal profile --board cortex-m7-qemu --model vgg-small --out latency.json
    #[command(verbatim_doc_comment)]
    Profile(ProfileArgs),
    /// Latency-constrained sweep: one weight stage shared by every budget, then per budget
    /// (and per cost weighting, for comparison) the gate stage, pruning, finetuning and a
    /// measurement on the board; sweep.json, sweep.md and a Pareto plot (SVG, PNG).
    ///
    /// Example:
    ///   dnal sweep --budgets-ms 20,40,80 --board cortex-m7-qemu --out runs/sweep
    /// Continue it (points already done are not redone):
    ///   dnal sweep --resume runs/sweep
    /// As jobs on a cluster (docs/sweeps.md): --only prepare, then --only point --point K
    /// for every K (in parallel), then --only collect.
    #[command(verbatim_doc_comment)]
    Sweep(SweepArgs),
    /// List the models, datasets and boards.
    List,
}

/// The stage settings a resumed run takes from its folder: giving one with --resume is an
/// error rather than silently ignored.
const TRAINING_OPTIONS: [&str; 32] = [
    "dataset",
    "data_dir",
    "input_size",
    "channels",
    "augment",
    "model",
    "train_limit",
    "test_limit",
    "epochs_weights",
    "epochs_gates",
    "epochs_finetune",
    "lambda",
    "cost",
    "backend",
    "seed",
    "batch_size",
    "lr",
    "lr_schedule",
    "lr_gates",
    "lr_finetune",
    "distill",
    "distill_temperature",
    "weight_decay",
    "delta_end",
    "gate_position",
    "precision",
    "epochs_qat",
    "lr_qat",
    "distill_qat",
    "distill_temperature_qat",
    "calibration_images",
    "winograd",
];

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
struct SweepArgs {
    /// Continue the sweep in this folder (its plan is read from DIR/sweep-plan.json; every
    /// other setting comes from there, so none may be given).
    #[arg(long, value_name = "DIR", conflicts_with_all = TRAINING_OPTIONS,
          conflicts_with_all = ["out", "budgets_ms", "board", "latency_table", "costs", "from_weights"])]
    resume: Option<PathBuf>,
    /// The sweep's folder (a new one, or the same as before to continue).
    #[arg(long, value_name = "DIR", required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Share the finished weight stage of this search, or of this other sweep, instead of
    /// training a parent: an int8 sweep, or one on another board, from the same trained
    /// network as an f32 sweep, for a comparison that differs only where it should. Its
    /// dataset, data folder, model, width, --train-limit, --test-limit, --epochs-weights,
    /// --seed and --gate-position are taken from it; one given here must agree.
    #[arg(long, value_name = "DIR")]
    from_weights: Option<PathBuf>,
    /// Latency budgets in milliseconds, comma-separated.
    #[arg(long, value_name = "MS,...", value_delimiter = ',')]
    budgets_ms: Vec<f64>,
    /// The board the budgets are for (profiled once into DIR/latency.json unless
    /// --latency-table is given).
    #[arg(long)]
    board: Option<String>,
    /// A latency table from `dnal profile` for this model and board.
    #[arg(long, value_name = "FILE")]
    latency_table: Option<PathBuf>,
    /// The cost weightings to compare at each budget.
    #[arg(long, value_delimiter = ',', default_value = "latency,flops,uniform")]
    costs: Vec<CostWeighting>,
    /// Run one part only, for array jobs: prepare (latency table + weight stage), point
    /// (with --point K), or collect (sweep.json and the plot from the points done so far).
    #[arg(long, value_parser = ["prepare", "point", "collect"])]
    only: Option<String>,
    /// The point to run with --only point (0-based; `--only prepare` lists them).
    #[arg(long, value_name = "K")]
    point: Option<usize>,
    #[command(flatten)]
    training: TrainingOptions,
    /// The options given on the command line (not defaults), by id.
    #[arg(skip)]
    given: Vec<String>,
}

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
struct SearchArgs {
    /// Continue the search in this folder where it stopped (all other options are taken from
    /// its checkpoint, so none may be given).
    #[arg(long, value_name = "DIR", conflicts_with_all = TRAINING_OPTIONS,
          conflicts_with_all = ["out", "from_weights", "flops_budget", "latency_budget_ms", "params_budget", "board", "latency_table"])]
    resume: Option<PathBuf>,
    /// Output folder (new or empty): checkpoints, arch.json, weights.safetensors, report.json.
    #[arg(long, value_name = "DIR", required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Start after the weight stage of the search in this folder instead of training a
    /// parent: its trained parent is copied in and only the gate stage, pruning and
    /// finetuning run here. Its dataset, data folder, model, --train-limit, --test-limit,
    /// --epochs-weights, --seed and --gate-position are taken from it; one given here must
    /// agree. To try another --lambda or budget without retraining.
    #[arg(long, value_name = "DIR")]
    from_weights: Option<PathBuf>,
    #[command(flatten)]
    training: TrainingOptions,
    /// Prune to at most this many multiply-accumulates per image (5500000, 5.5M, 800K), or
    /// this share of the parent's (25%): the search steers lambda_a from --lambda during the
    /// gate stage, holding delta while the gates are more than 5% off the budget so that they
    /// land on it, and fits the kept channels to land at or under the budget. Without this,
    /// --latency-budget-ms or --lambda, the budget is 40% of the parent's MACs.
    #[arg(long, value_name = "MACS|N%", value_parser = parse_flops_budget,
          conflicts_with_all = ["latency_budget_ms", "params_budget"])]
    flops_budget: Option<Budget>,
    /// Prune to at most this many milliseconds per image on --board (from its latency table,
    /// at the clock the table assumes); measured on the board after the search.
    #[arg(long, value_name = "MS", conflicts_with = "params_budget")]
    latency_budget_ms: Option<f64>,
    /// Prune to at most this many parameters (25000, 25K), or this share of the parent's
    /// (10%): weights and biases as deployed, batch norm folded, so the weights' flash is 4
    /// bytes each in f32 and about 1 in int8. Steered and fitted as --flops-budget is. A mobile
    /// network keeps most of its parameters in its late layers, which cost few MACs: add
    /// --cost params so that the gates weigh channels by what the budget counts.
    #[arg(long, value_name = "PARAMS|N%", value_parser = parse_params_budget)]
    params_budget: Option<Budget>,
    /// The board whose measured latency steers the search (--cost latency, latency budgets);
    /// the pruned network is deployed and measured there after the search. Its latency table
    /// is --latency-table, or profiled into OUT/latency.json (minutes, once).
    #[arg(long)]
    board: Option<String>,
    /// A latency table from `dnal profile` for this model and board.
    #[arg(long, value_name = "FILE")]
    latency_table: Option<PathBuf>,
    /// The paper's CIFAR-10 settings (section V): paper-vgg16, paper-resnet56 or
    /// paper-mobilenetv2 set the model, --dataset cifar10, 100/20/110 epochs, batches of 96, a
    /// fixed learning rate of 0.1 in the weight stage and the gates, and the budget of the
    /// paper's result where it gives one (`dnal list` shows them; README, "Paper presets").
    /// Options given here override the preset's: `--train-limit 5000 --epochs-weights 10`
    /// runs a subset.
    #[arg(long, value_name = "NAME", value_parser = dnal::preset::preset,
          conflicts_with_all = ["resume", "from_weights"])]
    preset: Option<&'static Preset>,
    /// The options given on the command line (not defaults), by id.
    #[arg(skip)]
    given: Vec<String>,
    /// Print report.json as one JSON document on standard output, for scripts (progress and
    /// errors stay on standard error).
    #[arg(long)]
    json: bool,
}

/// The settings of the stages, shared by `dnal search` and `dnal sweep`.
#[derive(Args, Debug)]
struct TrainingOptions {
    /// Dataset: fashion-mnist, mnist, idx (IDX files of your own), cifar10, folder (an
    /// ImageNet-style tree) or synthetic.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// Folder holding the dataset's files (fashion-mnist defaults to
    /// /usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// An image folder's input size, HxW (say 28x28); default: the images' own when they all
    /// have one size, else 32x32. Every image is scaled to cover it and centre-cropped.
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    input_size: Option<(usize, usize)>,
    /// An image folder's channels: 1 (grayscale) or 3 (RGB); default: 1 when every image is
    /// grayscale, else 3.
    #[arg(long, value_parser = parse_channels)]
    channels: Option<usize>,
    /// Training augmentation instead of the dataset's own: none, flip, shift or flip,shift
    /// (shifts of up to 1/8 of the side). Defaults: fashion-mnist and cifar10 flip,shift;
    /// mnist shift; idx none; folder shift, and flip too for colour images.
    #[arg(long, value_parser = ["none", "flip", "shift", "flip,shift", "shift,flip"])]
    augment: Option<String>,
    /// Model to search (`dnal list` shows them); the default suits 28x28 inputs.
    #[arg(long, default_value = dnal_models::DEFAULT_MODEL)]
    model: String,
    /// Width multiplier of mobilenetv2, from 0.35 to 1.4 (channels scaled, rounded to
    /// multiples of 8). At 0.35 a weight epoch over Fashion-MNIST's 60,000 images takes about
    /// 4 minutes on a quiet 2-core CPU, so the default search (20/5/15 epochs) about 3 hours.
    #[arg(long, value_name = "X")]
    width: Option<f64>,
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
    /// Epochs of finetuning the pruned network. Heavily pruned networks keep gaining from
    /// longer finetuning (vgg-small on Fashion-MNIST at 4x fewer FLOPs: 10, 20, 40, 60, 80
    /// epochs gave 91.9%, 92.3%, 92.7%, 92.8%, 92.9% against the parent's 93.3%;
    /// BENCHMARKS.md).
    #[arg(long, value_name = "C", default_value_t = SearchConfig::default().epochs_finetune)]
    epochs_finetune: usize,
    /// lambda_a: how hard the gate stage pushes channels out; larger prunes more. The
    /// per-channel costs c_l average 1, so lambda_a has the paper's scale (1e-5 to 5e-4 for
    /// VGG16 and ResNet-56 on CIFAR-10). Given alone, it is fixed (the paper's DNAL; how much
    /// it prunes depends steeply on the data); with a budget it is where lambda_a starts
    /// (without it, a budgeted search starts where the architecture loss outweighs the data on
    /// the share of the channels the budget closes: about 1 - sqrt(budget / parent's cost)).
    /// Without it or a budget, a search prunes to 40% of the parent's MACs.
    #[arg(long, value_name = "X", default_value_t = SearchConfig::default().lambda)]
    lambda: f64,
    /// What a channel costs in the architecture loss: uniform (the paper: every channel 1),
    /// flops (the MACs one channel costs), latency (its measured latency on --board) or params
    /// (the parameters it costs), normalised to a mean of 1.
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
    /// Learning rate of the weight stage: the peak of its cosine schedule, or the constant
    /// (--lr-schedule constant).
    #[arg(long, default_value_t = SearchConfig::default().lr)]
    lr: f64,
    /// How the weight stage's learning rate moves: cosine (a warm-up epoch, then annealing to
    /// 0) or constant (the paper's VGG16: 0.1 fixed).
    #[arg(long, default_value_t = SearchConfig::default().lr_schedule)]
    lr_schedule: LrSchedule,
    /// Learning rate of the gates (constant).
    #[arg(long, default_value_t = SearchConfig::default().lr_gates)]
    lr_gates: f64,
    /// Peak learning rate of finetuning.
    #[arg(long, default_value_t = SearchConfig::default().lr_finetune)]
    lr_finetune: f64,
    /// Finetune with the trained parent as teacher: the weight of its softened outputs in the
    /// loss, (1 - X) * cross entropy + X * T^2 * KL(parent || pruned), in [0, 1]. 0 (the
    /// default) is plain cross entropy; 0.9 is the usual choice. Each step then also runs the
    /// parent forward, which slows finetuning; on Fashion-MNIST at 4x fewer FLOPs it did not
    /// beat plain finetuning (BENCHMARKS.md).
    #[arg(long, value_name = "X", default_value_t = SearchConfig::default().distill)]
    distill: f64,
    /// Temperature T that softens the parent's outputs for --distill.
    #[arg(long, value_name = "T", default_value_t = SearchConfig::default().distill_temperature)]
    distill_temperature: f64,
    /// SGD weight decay (weight stage and finetuning).
    #[arg(long, default_value_t = SearchConfig::default().weight_decay)]
    weight_decay: f64,
    /// delta at the end of the gate stage.
    #[arg(long, default_value_t = SearchConfig::default().delta_end)]
    delta_end: f64,
    /// Where the gate sits: after-bn (Conv-BN-SS-ReLU, the paper's best), before-bn or
    /// after-activation (the paper's ablations).
    #[arg(long, default_value = "after-bn", value_parser = parse_gate_position)]
    gate_position: GatePosition,
    /// How batch norm normalises in the gate stage (weights frozen): batch (each batch's
    /// statistics, a gate stage in training mode; the paper does not say; deep networks such as
    /// mobilenetv2 need it, or the half-open gates at the stage's start compound through the
    /// layers until the network guesses) or running (the parent's statistics, fixed).
    #[arg(long, default_value_t = SearchConfig::default().gate_norm)]
    gate_norm: GateStageNorm,
    /// The precision of the network the search delivers: f32, or int8. With int8 the search
    /// ends as `dnal quantize` does, into OUT/int8: the finetuned network (batch norm folded)
    /// is calibrated on --calibration-images training images and trained --epochs-qat more
    /// epochs with every weight and value rounded to its int8 grid (quantisation-aware
    /// training), so that the int8 network is the one trained. OUT keeps the f32 export;
    /// report.json gives both networks' top-1 and weight bytes.
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: Precision,
    /// Epochs of quantisation-aware training with --precision int8 (0: post-training
    /// quantisation alone).
    #[arg(long, value_name = "N", default_value_t = SearchConfig::default().epochs_qat)]
    epochs_qat: usize,
    /// Peak learning rate of quantisation-aware training (cosine schedule to 0).
    #[arg(long, value_name = "X", default_value_t = SearchConfig::default().lr_qat)]
    lr_qat: f64,
    /// Quantisation-aware training with the f32 network as teacher: the weight of its
    /// softened outputs in the loss, (1 - X) * cross entropy + X * T^2 * KL(f32 || int8), in
    /// [0, 1]. 1 (the default) trains int8 to answer as f32 does; 0 trains on the labels
    /// alone, which moves more of the network's answers (BENCHMARKS.md).
    #[arg(long, value_name = "X", default_value_t = SearchConfig::default().distill_qat)]
    distill_qat: f64,
    /// Temperature T that softens the f32 network's outputs for --distill-qat.
    #[arg(long, value_name = "T", default_value_t = SearchConfig::default().distill_temperature_qat)]
    distill_temperature_qat: f64,
    /// Training images whose value ranges set the int8 activation scales (--precision int8).
    #[arg(long, value_name = "N", default_value_t = SearchConfig::default().calibration_images)]
    calibration_images: usize,
    /// With --precision int8 on a Cortex-M4/M7 --board: measure the network as `dnal deploy
    /// --winograd` runs it, 3x3 convolutions by Winograd's F(2x2, 3x3) (fewer instructions,
    /// a larger arena); the latency table is profiled so, or must have been
    /// (`dnal profile --precision int8 --winograd`).
    #[arg(long)]
    winograd: bool,
}

impl TrainingOptions {
    fn config(self) -> SearchConfig {
        SearchConfig {
            dataset: self.dataset,
            // Stored absolute: eval, deploy and resume may run from another folder.
            data_dir: self.data_dir.map(|d| std::path::absolute(&d).unwrap_or(d)),
            image_size: self.input_size,
            channels: self.channels,
            augment: self.augment,
            model: self.model,
            width: self.width,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            epochs_weights: self.epochs_weights,
            epochs_gates: self.epochs_gates,
            epochs_finetune: self.epochs_finetune,
            batch_size: self.batch_size,
            lr: self.lr,
            lr_schedule: self.lr_schedule,
            lr_gates: self.lr_gates,
            lr_finetune: self.lr_finetune,
            distill: self.distill,
            distill_temperature: self.distill_temperature,
            weight_decay: self.weight_decay,
            lambda: self.lambda,
            cost: self.cost,
            delta_end: self.delta_end,
            gate_position: self.gate_position,
            gate_norm: self.gate_norm,
            backend: self.backend,
            seed: self.seed,
            precision: self.precision,
            epochs_qat: self.epochs_qat,
            lr_qat: self.lr_qat,
            distill_qat: self.distill_qat,
            distill_temperature_qat: self.distill_temperature_qat,
            calibration_images: self.calibration_images,
            winograd: self.winograd,
            ..SearchConfig::default()
        }
    }
}

/// An export's precision: f32 or int8.
fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "f32" => Ok(Precision::F32),
        "int8" => Ok(Precision::Int8),
        _ => Err(format!("{s:?}: use f32 or int8")),
    }
}

/// An image folder's channel count: 1 (grayscale) or 3 (RGB).
fn parse_channels(s: &str) -> Result<usize, String> {
    match s {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!("{s:?}: use 1 (grayscale) or 3 (RGB)")),
    }
}

/// "28x28" as (height, width).
fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    match s.split_once(['x', 'X']) {
        Some((h, w)) => match (parse(h), parse(w)) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => Err(format!(
                "{s:?}: height and width must be whole numbers from 1, as in 28x28"
            )),
        },
        None => Err(format!("{s:?}: give HEIGHTxWIDTH, as in 28x28")),
    }
}

/// `--flops-budget`: a count of MACs, or a share of the parent's with `%`.
fn parse_flops_budget(s: &str) -> Result<Budget, String> {
    parse_count_or_share(s, Budget::Flops, Budget::FlopsShare)
}

/// `--params-budget`: a count of parameters, or a share of the parent's with `%`.
fn parse_params_budget(s: &str) -> Result<Budget, String> {
    parse_count_or_share(s, Budget::Params, Budget::ParamsShare)
}

fn parse_count_or_share(
    s: &str,
    count: fn(f64) -> Budget,
    share: fn(f64) -> Budget,
) -> Result<Budget, String> {
    match s.strip_suffix('%') {
        Some(percent) => percent
            .trim()
            .parse::<f64>()
            .map(|p| share(p / 100.0))
            .map_err(|_| format!("{s:?} is not a share; write e.g. 25%")),
        None => parse_count(s).map(count),
    }
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
    /// Print the result as one JSON document on standard output, for scripts (progress and
    /// errors stay on standard error).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct QuantizeArgs {
    /// The f32 export folder (what `dnal search --out` wrote).
    #[arg(long, value_name = "DIR")]
    export: PathBuf,
    /// Where the int8 export goes (a folder of its own: it never overwrites an f32 export).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Training images whose value ranges set the activation scales (the first N of the
    /// training set).
    #[arg(long, value_name = "N", default_value_t = dnal::quantize::DEFAULT_CALIBRATION_IMAGES)]
    calibration_images: usize,
    /// Epochs of quantisation-aware training after calibration: the export (batch norm
    /// folded) trained on the search's training images with every weight and value rounded
    /// to its int8 grid, then quantised on the same grids. 0 (the default) is post-training
    /// quantisation alone; the report then has no training and no post-training top-1.
    #[arg(long, value_name = "N", default_value_t = 0)]
    epochs: usize,
    /// Peak learning rate of quantisation-aware training (cosine schedule to 0; SGD with the
    /// search's momentum and weight decay).
    #[arg(long, value_name = "X", default_value_t = SearchConfig::default().lr_qat)]
    lr: f64,
    /// Quantisation-aware training with the f32 export as teacher: the weight of its softened
    /// outputs in the loss, (1 - X) * cross entropy + X * T^2 * KL(f32 || int8), in [0, 1].
    /// 1 (the default) trains int8 to answer as f32 does; 0 trains on the labels alone, which
    /// moves more of the network's answers (BENCHMARKS.md).
    #[arg(long, value_name = "X", default_value_t = dnal::quantize::aware::DEFAULT_DISTILL)]
    distill: f64,
    /// Temperature T that softens the f32 export's outputs for --distill.
    #[arg(long, value_name = "T",
          default_value_t = dnal::quantize::aware::DEFAULT_DISTILL_TEMPERATURE)]
    distill_temperature: f64,
    /// Folder holding the dataset (default: the one the search used).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Evaluate both networks on the first N test images (default: as many as the search
    /// evaluated).
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Where the f32 network runs (calibration and its evaluation).
    #[arg(long, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// Print the result as one JSON document on standard output, for scripts.
    #[arg(long)]
    json: bool,
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
    /// The board's latency table for the export's model (`dnal profile`, with --precision
    /// int8 for an int8 export): the measured cost is compared with its prediction, as is and
    /// corrected by the measurements kept beside it (FILE's name with .measurements.json),
    /// and kept there too, so that the table's predictions improve with every deploy
    /// (deploy.json's `prediction`).
    #[arg(long, value_name = "FILE", requires = "run")]
    latency_table: Option<PathBuf>,
    /// An int8 export on a Cortex-M4/M7 board: run its 3x3 convolutions at stride 1 by
    /// Winograd's F(2x2, 3x3) where that takes fewer instructions (8 to 96 input channels,
    /// outputs of at least 4x4): 16 multiplies per 2x2 block of outputs and input channel
    /// where the direct way takes 36. Bit-exact with the direct way, about a quarter fewer
    /// instructions on vgg-small, for a larger arena (the layer's transformed weights or
    /// inputs, whichever are smaller: 2.3x on vgg-small). A latency table for it is profiled
    /// with `dnal profile --precision int8 --winograd`.
    #[arg(long)]
    winograd: bool,
    /// Print deploy.json as one JSON document on standard output, for scripts (progress and
    /// errors stay on standard error).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ProfileArgs {
    /// The board: a *-qemu board (instruction counts) or a real board (cycles; needs probe-rs).
    #[arg(long)]
    board: String,
    /// The model (`dnal list`).
    #[arg(long, default_value = dnal_models::DEFAULT_MODEL)]
    model: String,
    /// The width multiplier of a model that takes one (mobilenetv2), as the search will.
    #[arg(long, value_name = "X")]
    width: Option<f64>,
    /// The dataset whose images the model takes (sets the input shape and classes).
    #[arg(long, default_value = "fashion-mnist")]
    dataset: String,
    /// Folder holding the dataset, if not in its default place.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// An image folder's input size, HxW, as the search will take it.
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    input_size: Option<(usize, usize)>,
    /// An image folder's channels, 1 or 3, as the search will take them.
    #[arg(long, value_parser = parse_channels)]
    channels: Option<usize>,
    /// Where to write the table (a new file: an existing one is not replaced).
    #[arg(long, value_name = "FILE", default_value = "latency.json")]
    out: PathBuf,
    /// Points per input-channel axis (from 1 to the model's count).
    #[arg(long, default_value_t = 3)]
    in_points: usize,
    /// Multiples of the 4-channel register block per output-channel axis.
    #[arg(long, default_value_t = 3)]
    out_points: usize,
    /// Points per axis of layers that keep their channel count (pools, depthwise, add).
    #[arg(long, default_value_t = 3)]
    channel_points: usize,
    /// The firmware to measure: f32, or int8 (the int8 kernels, with the SMLAD convolution on
    /// the Cortex-M4/M7 boards): what `dnal search --precision int8` and `dnal deploy` of an
    /// int8 export need.
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: Precision,
    /// With --precision int8 on a Cortex-M4/M7 board: measure 3x3 convolutions by Winograd's
    /// F(2x2, 3x3), as `dnal deploy --winograd` runs them. For `dnal search --winograd
    /// --latency-table` (a search with --winograd and no table profiles so itself).
    #[arg(long, requires = "precision")]
    winograd: bool,
    /// Print the result as one JSON document on standard output, for scripts (progress and
    /// errors stay on standard error).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `--from-weights` inherits what was not given: which options were is kept.
    let given = |sub: &clap::ArgMatches| {
        sub.ids()
            .filter(|id| sub.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.as_str().to_string())
            .collect()
    };
    if let (Command::Search(args), Some(("search", sub))) = (&mut cli.command, matches.subcommand())
    {
        args.given = given(sub);
    }
    if let (Command::Sweep(args), Some(("sweep", sub))) = (&mut cli.command, matches.subcommand()) {
        args.given = given(sub);
    }
    dnal::allocator::keep_freed_memory();
    default_device_on_the_cpu();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = option_hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The option or command that mends an error, for errors whose libraries describe the mend
/// without knowing this command line (another data folder, a new latency table).
fn option_hint(e: &anyhow::Error) -> Option<String> {
    use dnal::SearchError;
    let error = e.chain().find_map(|c| c.downcast_ref::<SearchError>())?;
    match error {
        SearchError::Dataset(d) if d.wants_data_folder() => {
            Some("--data-dir DIR gives the data folder".into())
        }
        SearchError::Latency(l) => l.table_to_profile().map(|(model, board)| {
            format!(
                "make the table with `dnal profile --model {model} --board {board} --out FILE`, then pass it with --latency-table FILE"
            )
        }),
        _ => None,
    }
}

/// burn puts what it loads without a device (the optimizer state of a checkpoint) on its
/// default device, which is the GPU whenever the wgpu feature is built in: resuming a CPU
/// search then started Vulkan (and printed lavapipe's complaints). Loading it on the CPU is
/// harmless for every backend: the state moves to the parameters' device at the next step.
fn default_device_on_the_cpu() {
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: set_var races with threads reading the environment; none has been
        // started yet (this runs first in main, before burn, rayon or indicatif start any).
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Search(args) => search(args),
        Command::Eval(args) => eval(args),
        Command::Quantize(args) => quantize(args),
        Command::Deploy(args) => deploy(args),
        Command::Profile(args) => profile(args),
        Command::Sweep(args) => sweep(args),
        Command::List => {
            println!("models (--model):");
            for (name, what) in dnal_models::MODELS {
                println!("  {name:<11} {what}");
            }
            println!("paper presets (dnal search --preset):");
            for preset in dnal::preset::PRESETS {
                println!("  {:<17} {}", preset.name, preset.what);
            }
            println!("datasets (--dataset):");
            for name in dnal_datasets::DATASET_NAMES {
                println!("  {name}");
            }
            println!("boards (--board):");
            for name in dnal_firmware::board::board_names() {
                println!("  {name}");
            }
            Ok(())
        }
    }
}

fn search(args: SearchArgs) -> Result<()> {
    let mut progress = TerminalProgress::new();
    let (report, out) = if let Some(dir) = args.resume {
        let report = dnal::search::resume(&dir, &mut progress)
            .with_context(|| format!("resuming the search in {}", dir.display()))?;
        (report, dir)
    } else {
        let out = args.out.expect("clap requires --out without --resume");
        let given = |id: &str| args.given.iter().any(|g| g == id);
        let preset = args.preset;
        // Neither a budget nor --lambda: the preset's budget or the default one (a fixed
        // lambda_a is only what the user asked for).
        let lambda_given = given("lambda");
        let default_budget = preset
            .and_then(|p| p.budget)
            .unwrap_or(Budget::FlopsShare(DEFAULT_FLOPS_SHARE));
        let budget = args
            .flops_budget
            .or(args.latency_budget_ms.map(Budget::LatencyMs))
            .or(args.params_budget)
            .or((!lambda_given).then_some(default_budget));
        let mut training = args.training.config();
        if let Some(preset) = preset {
            preset.apply(&mut training, given);
            eprintln!(
                "preset {}: {} (options given here win)",
                preset.name,
                preset.describe()
            );
        }
        let config = SearchConfig {
            budget,
            // Without --lambda a budgeted search starts lambda_a where the data balance it.
            lambda_from_data: budget.is_some() && !lambda_given,
            board: args.board,
            latency_table: args.latency_table,
            ..training
        };
        let report = if let Some(from) = args.from_weights {
            let mut config = config;
            let source = dnal::search::settings_of(&from)
                .with_context(|| format!("reading the search in {}", from.display()))?;
            inherit_weight_stage(&mut config, &source, &from, |id| {
                args.given.iter().any(|g| g == id)
            })?;
            dnal::search::fork_after_weights(&from, &out, config).with_context(|| {
                format!(
                    "starting {} from the weight stage in {}",
                    out.display(),
                    from.display()
                )
            })?;
            dnal::search::resume(&out, &mut progress)
        } else {
            dnal::search::search(config, &out, &mut progress)
        }
        .with_context(|| format!("searching into {}", out.display()))?;
        (report, out)
    };
    drop(progress);
    // Said during the search too, but lines above a progress bar scroll away.
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} | exported to {}", report.summary(), out.display());
    }
    Ok(())
}

/// Takes the weight stage's settings from the search in `from` for every one not given, and
/// refuses one given with another value than the source's: the trained parent is the
/// source's, whatever the command line says.
fn inherit_weight_stage(
    config: &mut SearchConfig,
    source: &SearchConfig,
    from: &std::path::Path,
    given: impl Fn(&str) -> bool,
) -> Result<()> {
    fn take<T: PartialEq + Clone + std::fmt::Debug>(
        id: &str,
        given: bool,
        mine: &mut T,
        theirs: &T,
        from: &std::path::Path,
    ) -> Result<()> {
        if !given {
            *mine = theirs.clone();
        } else if mine != theirs {
            anyhow::bail!(
                "--{} {mine:?} differs from the {theirs:?} of the weight stage in {}; leave it out to take the source's",
                id.replace('_', "-"),
                from.display()
            );
        }
        Ok(())
    }
    // The option's id, then the setting it fills.
    macro_rules! inherit {
        ($($id:literal => $field:ident),* $(,)?) => {
            $(take($id, given($id), &mut config.$field, &source.$field, from)?;)*
        };
    }
    inherit!(
        "dataset" => dataset,
        "input_size" => image_size,
        "channels" => channels,
        "model" => model,
        "width" => width,
        "train_limit" => train_limit,
        "epochs_weights" => epochs_weights,
        "seed" => seed,
        "gate_position" => gate_position,
    );
    // Where the data is and how much of the test set is used may differ (a moved dataset, a
    // quicker evaluation); not given, they are the source's too.
    if !given("data_dir") {
        config.data_dir.clone_from(&source.data_dir);
    }
    if !given("test_limit") {
        config.test_limit = source.test_limit;
    }
    if !given("augment") {
        config.augment.clone_from(&source.augment);
    }
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    println!(
        "{} ({}): top-1 {:.4} ({:.2}%), top-5 {:.4} on {} test images of {}; {} MACs, {} params",
        args.export.display(),
        result.precision,
        result.accuracy.top1,
        100.0 * result.accuracy.top1,
        result.accuracy.top5,
        result.accuracy.images,
        result.dataset,
        result.flops,
        result.params
    );
    match result.reproduction {
        Some(Reproduction::Exact { hits, images }) => {
            println!("report.json: top-1 {hits} of {images}: reproduced exactly")
        }
        Some(Reproduction::Different {
            reported_hits,
            hits,
            images,
        }) => println!(
            "report.json: top-1 {reported_hits} of {images}, this evaluation {hits} of {images}: DIFFERENT"
        ),
        Some(Reproduction::OtherImages {
            reported_images,
            images,
        }) => println!(
            "report.json counts {reported_images} test images, this evaluation {images} (--test-limit): not comparable"
        ),
        Some(Reproduction::Fraction {
            reported_top1,
            same,
        }) => println!(
            "report.json says top-1 {reported_top1:.4} (it counts no hits): {}",
            if same { "reproduced" } else { "DIFFERENT" }
        ),
        None => {}
    }
    Ok(())
}

/// `dnal quantize`'s progress: one bar per phase, a line per quantisation-aware epoch.
struct QuantizeBar {
    bar: indicatif::ProgressBar,
    phase: Option<dnal::quantize::QuantizePhase>,
}

impl QuantizeBar {
    fn new() -> Self {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>9} [{bar:30}] {pos}/{len} {msg} {per_sec} (eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        Self { bar, phase: None }
    }
}

impl dnal::quantize::QuantizeProgress for QuantizeBar {
    fn progress(&mut self, phase: dnal::quantize::QuantizePhase, done: usize, total: usize) {
        use dnal::quantize::QuantizePhase;
        if self.phase != Some(phase) {
            self.phase = Some(phase);
            self.bar.reset();
            self.bar.set_length(total as u64);
            let (prefix, unit) = match phase {
                QuantizePhase::Calibrate => ("calibrate".to_string(), "images"),
                QuantizePhase::Train { epoch } => (format!("qat {epoch}"), "steps"),
                QuantizePhase::EvaluatePtq => ("ptq eval".to_string(), "images"),
                QuantizePhase::EvaluateInt8 => ("int8 eval".to_string(), "images"),
            };
            self.bar.set_prefix(prefix);
            self.bar.set_message(unit);
        }
        self.bar.set_position(done as u64);
    }

    fn epoch(&mut self, r: &dnal::report::EpochRecord) {
        self.bar.suspend(|| eprintln!(
            "qat epoch {}: loss {:.4} train {:.2}% test {:.2}% (fake-quantised) lr {:.4} {:.1}s",
            r.epoch,
            r.loss,
            100.0 * r.train_top1,
            100.0 * r.test_top1,
            r.lr,
            r.seconds
        ));
    }
}

impl Drop for QuantizeBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn quantize(args: QuantizeArgs) -> Result<()> {
    use dnal::quantize::{QuantizeOptions, quantize_export};
    let options = QuantizeOptions {
        export_dir: args.export.clone(),
        out_dir: args.out.clone(),
        calibration_images: args.calibration_images,
        training: (args.epochs > 0).then(|| dnal::quantize::aware::AwareTraining {
            epochs: args.epochs,
            lr: args.lr,
            momentum: SearchConfig::default().momentum,
            weight_decay: SearchConfig::default().weight_decay,
            distill: args.distill,
            distill_temperature: args.distill_temperature,
        }),
        data_dir: args.data_dir,
        test_limit: args.test_limit,
        backend: args.backend,
    };
    let mut progress = QuantizeBar::new();
    let report = quantize_export(&options, &mut progress).with_context(|| {
        format!(
            "quantising {} to int8 in {}",
            args.export.display(),
            args.out.display()
        )
    })?;
    drop(progress);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{}: int8 export, calibrated on {} training images of {}{}",
        args.out.display(),
        report.calibration_images,
        report.dataset,
        match &report.training {
            Some(t) => format!(", then {}", t.describe()),
            None => String::new(),
        }
    );
    if let Some(ptq) = &report.post_training {
        println!(
            "post-training quantisation alone: int8 top-1 {:.2}%",
            100.0 * ptq.top1
        );
    }
    println!(
        "top-1 on {} test images: f32 {:.2}%, int8 {:.2}% ({:+.2} pp); top-5 f32 {:.2}%, int8 {:.2}%",
        report.int8.images,
        100.0 * report.f32.top1,
        100.0 * report.int8.top1,
        report.top1_change_pp,
        100.0 * report.f32.top5,
        100.0 * report.int8.top5
    );
    if let Some(agreement) = &report.f32_agreement {
        println!("{}", agreement.describe());
    }
    println!(
        "weights: {} bytes as f32, {} as int8 ({:.2}x, per-channel scales and requantisation included)",
        report.f32_weight_bytes,
        report.int8_weight_bytes,
        report.int8_weight_bytes as f64 / report.f32_weight_bytes.max(1) as f64
    );
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
        latency_table: args.latency_table,
        winograd: args.winograd,
    };
    let report = dnal::deploy::deploy_export(&options).with_context(|| {
        format!(
            "deploying {} to {} in {}",
            args.export.display(),
            args.board,
            args.out.display()
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} ({}, {}): flash {} of {} bytes, RAM {} of {} bytes (arena {} bytes, lower bound {}), firmware {}",
        report.board,
        report.cpu,
        if report.winograd {
            format!("{}, 3x3 by Winograd", report.precision)
        } else {
            report.precision.to_string()
        },
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
    if let Some(check) = &report.prediction {
        println!("latency: {}", dnal::deploy::describe_prediction(check));
        if let Some(note) = &check.note {
            eprintln!("warning: {note}");
        }
    }
    if let Some(agreement) = &report.f32_agreement {
        println!(
            "top-1 agreement with the f32 network ({}) on {} images: {:.1}%",
            agreement.reference.display(),
            agreement.images,
            100.0 * agreement.top1_agreement
        );
    }
    println!("wrote {}", args.out.join("deploy.json").display());
    Ok(())
}

fn profile(args: ProfileArgs) -> Result<()> {
    // The folder the table goes to is locked while profiling, so two profiles cannot write
    // one file; an existing table is refused before minutes of work, not overwritten after.
    let folder = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let _lock = dnal::lock::OutputLock::acquire(&folder)
        .with_context(|| format!("profiling into {}", args.out.display()))?;
    if args.out.symlink_metadata().is_ok() {
        anyhow::bail!(
            "--out {}: the file exists; choose a new path or remove it first (a table is not overwritten)",
            args.out.display()
        );
    }
    let config = SearchConfig {
        dataset: args.dataset.clone(),
        data_dir: args.data_dir.clone(),
        image_size: args.input_size,
        channels: args.channels,
        model: args.model.clone(),
        width: args.width,
        train_limit: Some(1),
        test_limit: Some(1),
        ..SearchConfig::default()
    };
    let dataset = dnal::data::load_dataset(&config)
        .with_context(|| format!("reading {} for its image shape", args.dataset))?;
    let spec = config.model_spec(
        dnal::data::input_shape(&dataset),
        dataset.train.num_classes(),
    )?;
    let plan = dnal_models::NetPlan::new(spec, GatePosition::AfterBn)?;
    let grid = dnal_firmware::latency::GridOptions {
        in_points: args.in_points,
        out_points: args.out_points,
        channel_points: args.channel_points,
    };
    eprintln!(
        "profiling every layer of {} on {} as {} firmware (this builds and runs benchmark firmware)",
        args.model,
        args.board,
        args.precision.name()
    );
    let table = dnal::latency::profile_model(
        &plan,
        &args.board,
        &args.out,
        &grid,
        (args.precision, args.winograd),
    )
    .with_context(|| format!("profiling {} on {}", args.model, args.board))?;
    let points: usize = table.layers.iter().map(|l| l.grid.points()).sum();
    if args.json {
        let summary = serde_json::json!({
            "table": args.out,
            "board": table.board,
            "model": table.model,
            "precision": table.precision,
            "winograd": table.winograd,
            "layers": table.layers.len(),
            "configurations": points,
            "unit": table.unit,
            "clock_hz": table.clock.hz,
            "overhead": table.overhead,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{}: {} layers, {} measured configurations, {} at {:.0} MHz ({}); overhead {:.0} {} per inference",
        args.out.display(),
        table.layers.len(),
        points,
        table.unit,
        table.clock.hz / 1e6,
        table.clock.assumption,
        table.overhead,
        table.unit
    );
    Ok(())
}

fn sweep(args: SweepArgs) -> Result<()> {
    let mut progress = TerminalProgress::new();
    let dir = match (&args.resume, &args.out) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => {
            if !dir.join("sweep-plan.json").exists() || !args.budgets_ms.is_empty() {
                let board = args
                    .board
                    .clone()
                    .context("a new sweep needs --board (and --budgets-ms)")?;
                let given = |id: &str| args.given.iter().any(|g| g == id);
                let mut base = SearchConfig {
                    latency_table: args.latency_table.clone(),
                    // Every point has a budget: as a search, it starts lambda_a where the
                    // data balance it unless --lambda says where.
                    lambda_from_data: !given("lambda"),
                    ..args.training.config()
                };
                let from_weights = match &args.from_weights {
                    Some(from) => {
                        let stage = dnal::sweep::weight_stage_in(from);
                        let source = dnal::search::settings_of(&stage).with_context(|| {
                            format!("reading the weight stage in {}", stage.display())
                        })?;
                        inherit_weight_stage(&mut base, &source, &stage, given)?;
                        // Kept in the plan, which cluster jobs read from other folders.
                        Some(std::path::absolute(from).unwrap_or_else(|_| from.clone()))
                    }
                    None => None,
                };
                let plan = dnal::sweep::SweepPlan {
                    base,
                    board,
                    budgets_ms: args.budgets_ms.clone(),
                    costs: args.costs.clone(),
                    from_weights,
                };
                dnal::sweep::start(&plan, dir)
                    .with_context(|| format!("starting the sweep in {}", dir.display()))?;
            }
            dir.clone()
        }
        (None, None) => unreachable!("clap requires --out or --resume"),
    };
    let context = || format!("the sweep in {}", dir.display());
    let report = match args.only.as_deref() {
        Some("prepare") => {
            dnal::sweep::prepare(&dir, &mut progress).with_context(context)?;
            let plan = dnal::sweep::load_plan(&dir)?;
            println!("prepared; points (run each with --only point --point K):");
            for (k, point) in plan.points().iter().enumerate() {
                println!("  {k}: {}", point.name());
            }
            return Ok(());
        }
        Some("point") => {
            let k = args.point.context("--only point needs --point K")?;
            dnal::sweep::run_point(&dir, k, &mut progress).with_context(context)?;
            return Ok(());
        }
        Some(_) => dnal::sweep::collect(&dir, &mut progress).with_context(context)?,
        None => dnal::sweep::resume(&dir, &mut progress).with_context(context)?,
    };
    print!("{}", dnal::sweep::markdown(&report));
    println!(
        "wrote {}, {}, {}",
        dir.join("sweep.json").display(),
        dir.join("sweep.md").display(),
        dir.join("pareto.svg").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnal::SearchError;
    use dnal_firmware::latency::{LatencyError, TableRef};

    #[test]
    fn a_flops_budget_is_a_count_or_a_share_of_the_parent() {
        assert_eq!(parse_flops_budget("5.4M"), Ok(Budget::Flops(5.4e6)));
        assert_eq!(parse_flops_budget("800K"), Ok(Budget::Flops(8e5)));
        assert_eq!(parse_flops_budget("25%"), Ok(Budget::FlopsShare(0.25)));
        assert_eq!(parse_params_budget("25K"), Ok(Budget::Params(25e3)));
        assert_eq!(parse_params_budget("10%"), Ok(Budget::ParamsShare(0.1)));
        let err = parse_flops_budget("a%").unwrap_err();
        assert!(err.contains("25%"), "{err}");
        // Out of range shares are the config's to refuse, naming the option.
        let config = SearchConfig {
            budget: Some(parse_flops_budget("150%").unwrap()),
            ..SearchConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("--flops-budget") && err.contains("150%"),
            "{err}"
        );
    }

    #[test]
    fn errors_mended_by_an_option_name_it() {
        let missing = dnal_datasets::load("mnist", None).unwrap_err();
        let e = anyhow::Error::from(SearchError::from(missing)).context("searching into runs/x");
        assert_eq!(
            option_hint(&e).as_deref(),
            Some("--data-dir DIR gives the data folder")
        );

        let table = TableRef {
            table: "latency.json".into(),
            model: "vgg-small".into(),
            board: "cortex-m7-qemu".into(),
        };
        let other_model = LatencyError::ModelMismatch {
            table: Box::new(table),
            model: "resnet20".into(),
        };
        let e = anyhow::Error::from(SearchError::from(other_model));
        let hint = option_hint(&e).unwrap();
        assert!(
            hint.contains("dnal profile --model resnet20 --board cortex-m7-qemu"),
            "{hint}"
        );

        // Errors an option would not mend get no hint.
        let unknown = dnal_datasets::load("imagenet-21k", None).unwrap_err();
        assert_eq!(option_hint(&SearchError::from(unknown).into()), None);
    }
}
