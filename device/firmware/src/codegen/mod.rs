//! Code generation: an export folder -> a no_std Rust model (weights in the order the
//! kernels read them, as statics whose values the optimiser cannot see; a planned static
//! activation arena; `infer`), wrapped in a firmware crate for one [`crate::board::Board`].

mod firmware;
pub(crate) mod hidden;
pub(crate) mod int8;
pub mod plan;
pub(crate) mod stamp;
pub mod vendor;

pub(crate) use firmware::write_crate_scaffold;
pub use firmware::{FirmwareCrate, FirmwareOptions, write_firmware_crate};
pub use int8::generate_int8_model;
pub use plan::{MemoryPlan, Place, plan_memory, plan_memory_with_scratch};
pub use stamp::code_stamp;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::board::Int8Simd;
use dnal_export::int8::Int8Export;
use dnal_export::{
    AnyExport, Arch, ArchSummary, Conv2dSpec, Export, Layer, LayerSummary, Op, Precision,
    check_name,
};
use dnal_kernels::arena::Span;
use dnal_kernels::{Activation, Conv2dParams, LinearParams, Shape3, f32 as kernels};
use hidden::emit_hidden;

/// Why code generation failed.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("layer {index} ({name}): {reason}")]
    Layer {
        index: usize,
        name: String,
        reason: String,
    },
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The generated model source and what the generator decided.
#[derive(Clone, Debug)]
pub struct GeneratedModel {
    /// `model.rs`: layer parameters, the arena and `infer`.
    pub model_rs: String,
    /// `weights.rs`: one `static` array per tensor, packed for its kernel.
    pub weights_rs: String,
    pub plan: MemoryPlan,
    /// Bytes of weights and biases in flash.
    pub weights_bytes: u64,
}

/// What the generator turns into a model: a validated f32 or int8 export.
#[derive(Clone, Copy, Debug)]
pub enum Network<'a> {
    F32(&'a Export),
    Int8(&'a Int8Export),
}

impl<'a> From<&'a Export> for Network<'a> {
    fn from(export: &'a Export) -> Self {
        Network::F32(export)
    }
}

impl<'a> From<&'a Int8Export> for Network<'a> {
    fn from(export: &'a Int8Export) -> Self {
        Network::Int8(export)
    }
}

impl<'a> From<&'a AnyExport> for Network<'a> {
    fn from(export: &'a AnyExport) -> Self {
        match export {
            AnyExport::F32(e) => Network::F32(e),
            AnyExport::Int8(e) => Network::Int8(e),
        }
    }
}

impl Network<'_> {
    pub fn arch(&self) -> &Arch {
        match self {
            Network::F32(e) => e.arch(),
            Network::Int8(e) => e.arch(),
        }
    }

    pub fn summary(&self) -> &ArchSummary {
        match self {
            Network::F32(e) => e.summary(),
            Network::Int8(e) => e.summary(),
        }
    }

    pub fn precision(&self) -> Precision {
        match self {
            Network::F32(_) => Precision::F32,
            Network::Int8(_) => Precision::Int8,
        }
    }

    /// Input values per image.
    pub fn input_len(&self) -> usize {
        self.arch().input.len()
    }

    /// Logits per image.
    pub fn output_len(&self) -> usize {
        self.arch().num_classes
    }

    /// Bytes of one activation value (the arena's and the embedded images' element).
    pub fn value_bytes(&self) -> u64 {
        match self {
            Network::F32(_) => 4,
            Network::Int8(_) => 1,
        }
    }

    /// Bytes of weights, biases (and int8 requantisation) the firmware stores.
    pub fn weights_bytes(&self) -> u64 {
        match self {
            Network::F32(e) => e.summary().params.saturating_mul(4),
            Network::Int8(e) => e.weight_bytes(),
        }
    }

    /// The arena plan the generated code uses on a board (`simd`: as [`Network::generate`]).
    pub fn plan(&self, simd: Int8Simd) -> MemoryPlan {
        match self {
            Network::F32(e) => plan_for(e),
            Network::Int8(e) => int8::plan_int8(e, simd),
        }
    }

    /// `model.rs` and `weights.rs` for a board; `simd`: the SIMD instructions its int8
    /// kernels use ([`Board::int8_simd`](crate::board::Board::int8_simd)).
    pub fn generate(&self, simd: Int8Simd) -> Result<GeneratedModel, CodegenError> {
        match self {
            Network::F32(e) => generate_model(e),
            Network::Int8(e) => generate_int8_model(e, simd),
        }
    }

    /// The reference's logits for normalised images: the f32 reference forward pass, or the
    /// integer reference's codes (as f32, exactly) of the quantised images.
    pub fn reference_logits(&self, images: &[Vec<f32>]) -> Vec<Vec<f32>> {
        match self {
            Network::F32(e) => images
                .iter()
                .map(|im| dnal_export::reference_forward(e, im))
                .collect(),
            Network::Int8(e) => images
                .iter()
                .map(|im| {
                    dnal_export::int8::reference_forward(e, &e.quantize_input(im))
                        .into_iter()
                        .map(f32::from)
                        .collect()
                })
                .collect(),
        }
    }

    /// A logit as the harness printed it (its bits), as a number: an f32 bit pattern, or an
    /// int8 code's byte.
    pub fn decode_logit(&self, bits: u32) -> f32 {
        match self {
            Network::F32(_) => f32::from_bits(bits),
            Network::Int8(_) => f32::from(bits as u8 as i8),
        }
    }
}

/// Generates `model.rs` and `weights.rs` for a validated export.
pub fn generate_model(export: &Export) -> Result<GeneratedModel, CodegenError> {
    generate(
        export.arch(),
        export.summary(),
        plan_for(export),
        WeightSource::Own(export),
    )
}

/// Where the generated code takes each layer's weights from.
#[derive(Clone, Copy)]
pub(crate) enum WeightSource<'a> {
    /// One `static` array per tensor in `weights.rs`, packed for its kernel.
    Own(&'a Export),
    /// The first values of two shared arrays, `weights::SHARED_W` and `weights::SHARED_B`,
    /// long enough for the largest layer (latency profiling: the code and the amount of data
    /// read are the model's, the values are not).
    Shared,
}

/// Name of the shared weight array of [`WeightSource::Shared`] in `weights.rs`.
pub(crate) const SHARED_WEIGHTS: &str = "SHARED_W";
/// Name of the shared bias array of [`WeightSource::Shared`] in `weights.rs`.
pub(crate) const SHARED_BIAS: &str = "SHARED_B";

/// The first `len` values of the shared hidden static `weights::{name}` (of element type
/// `ty`) as the kernels take a model's own tensor: a reference to an array of constant length.
pub(crate) fn shared_prefix(name: &str, ty: &str, len: usize) -> String {
    format!("<&[{ty}; {len}]>::try_from(&weights::{name}[..{len}]).unwrap()")
}

/// Fills a layer call's `{w}`, `{b}` and (int8) `{rq}` with its tensors' expressions, as
/// models and latency benchmarks alike pass them: the weights as they are (hidden statics,
/// [`hidden`]), the biases and requantisation pairs also through `black_box`, their address
/// out of sight too: on a MobileNetV2 that ran 0.2% (f32) and 0.3% (int8) fewer instructions
/// on the M7, 0.1% on aarch64, than with it in sight.
pub(crate) fn bind_tensors(call: &str, w: &str, b: &str, rq: Option<&str>) -> String {
    let opaque = |expr: &str| format!("core::hint::black_box({expr})");
    let call = call.replace("{w}", w).replace("{b}", &opaque(b));
    match rq {
        Some(rq) => call.replace("{rq}", &opaque(rq)),
        None => call,
    }
}

/// Generates `model.rs` (and with [`WeightSource::Own`], `weights.rs`) for a validated
/// architecture with the given memory plan.
pub(crate) fn generate(
    arch: &Arch,
    summary: &ArchSummary,
    plan: MemoryPlan,
    source: WeightSource<'_>,
) -> Result<GeneratedModel, CodegenError> {
    let n_layers = arch.layers.len();

    let mut functions = String::new();
    let mut body = String::new();
    let mut weights = String::new();
    let mut weights_bytes = 0u64;
    let _ = writeln!(
        weights,
        "//! Weights of `{}`, packed in the order the kernels read them. Generated by dnal-firmware.\n\
         #![cfg_attr(rustfmt, rustfmt::skip)]",
        inert(&arch.name)
    );

    for (index, (layer, info)) in arch.layers.iter().zip(&summary.layers).enumerate() {
        let ident = layer_ident(index, &layer.name);
        let layer_err = |reason: String| CodegenError::Layer {
            index,
            name: layer.name.clone(),
            reason,
        };
        let code = layer_code(&ident, layer, info).map_err(layer_err)?;
        let mut call = code.call.clone();
        // Weights and biases are hidden statics (`hidden`), here and in the latency benchmarks:
        // seen, their values let LLVM fold them into the code (a bias into an immediate, an
        // unrolled layer's products), so the instructions a network ran depended on its
        // weights, not only on its architecture: the same MobileNetV2 measured 1,048
        // instructions (0.02%) more on aarch64 after finetuning than at its fit, over its
        // budget. Hidden, a layer compiles the same with any values, and a measured fit holds
        // after finetuning.
        if let Some(packing) = &code.packing {
            let (w_expr, b_expr) = match source {
                WeightSource::Own(export) => {
                    let (w, b) = export
                        .weight_and_bias(&layer.name)
                        .ok_or_else(|| layer_err("weights missing".into()))?;
                    let packed = packing.pack(&w.data);
                    weights_bytes += emit_hidden(
                        &mut weights,
                        (&format!("{ident}_W"), &format!("[f32; {}]", packed.len())),
                        &packed,
                        &format!(
                            "{} weights, packed for {}",
                            inert(&layer.name),
                            code.kernel_fn
                        ),
                    );
                    weights_bytes += emit_hidden(
                        &mut weights,
                        (&format!("{ident}_B"), &format!("[f32; {}]", b.data.len())),
                        &b.data,
                        &format!("{} bias", inert(&layer.name)),
                    );
                    (
                        format!("&weights::{ident}_W"),
                        format!("&weights::{ident}_B"),
                    )
                }
                WeightSource::Shared => {
                    let [w, b] = info
                        .tensor_shapes
                        .as_ref()
                        .ok_or_else(|| layer_err("no weight shapes".into()))?;
                    let (w_len, b_len) = (w.iter().product::<usize>(), b.iter().product::<usize>());
                    weights_bytes += 4 * (w_len + b_len) as u64;
                    (
                        shared_prefix(SHARED_WEIGHTS, "f32", w_len),
                        shared_prefix(SHARED_BIAS, "f32", b_len),
                    )
                }
            };
            call = bind_tensors(&call, &w_expr, &b_expr, None);
        }
        emit_layer(
            (&mut functions, &mut body),
            index,
            (layer, info),
            &code,
            &plan,
            &call,
            "f32",
        )
        .map_err(layer_err)?;
    }

    let mut model = String::new();
    let _ = writeln!(
        model,
        "//! Model `{name}` ({dataset}): {n_layers} layers, {macs} MACs, {params} parameters.\n\
         //! Generated by dnal-firmware from its export; edit the export, not this file.\n\
         //!\n\
         //! Activations live in one static arena of {arena_len} f32 ({arena_bytes} bytes), planned by\n\
         //! buffer liveness; the lower bound (largest total of values live during one layer) is\n\
         //! {lower} f32 ({lower_bytes} bytes).\n\n\
         use dnal_kernels::arena::{{Arena, Span, StaticArena}};\n\
         use dnal_kernels::const_params;\n\
         #[allow(unused_imports)]\n\
         use dnal_kernels::{{Activation, Conv2dParams, LinearParams, Pool2dParams, Shape3, f32 as kernels}};\n\n\
         use crate::weights;\n\n\
         /// The activations' number format.\n\
         pub type Value = f32;\n\
         /// A logit as the harness prints it: its bit pattern (exact).\n\
         pub fn logit_bits(v: Value) -> u32 {{\n    v.to_bits()\n}}\n\n\
         /// Values per input image ({input}, CHW, normalised).\n\
         pub const INPUT_LEN: usize = {input_len};\n\
         /// Logits per image.\n\
         pub const OUTPUT_LEN: usize = {output_len};\n\
         /// Layers (`after_layer` is called once per layer).\n\
         pub const LAYER_COUNT: usize = {n_layers};\n\
         /// Arena length in f32 values.\n\
         pub const ARENA_LEN: usize = {arena_len};\n\n\
         static ARENA: StaticArena<ARENA_LEN> = StaticArena::new();\n\n\
         // Each layer is a function of its own (`layer_function` in dnal-firmware's codegen).\n",
        name = inert(&arch.name),
        dataset = if arch.dataset.is_empty() {
            "no dataset named".into()
        } else {
            inert(&arch.dataset)
        },
        macs = summary.macs,
        params = summary.params,
        arena_len = plan.arena_len,
        arena_bytes = plan.arena_len * 4,
        lower = plan.lower_bound,
        lower_bytes = plan.lower_bound * 4,
        input = arch.input,
        input_len = arch.input.len(),
        output_len = arch.num_classes,
    );
    let _ = writeln!(model, "{functions}");
    let _ = writeln!(
        model,
        "/// Runs one image through the network.\n\
         pub fn infer(input: &[f32; INPUT_LEN], output: &mut [f32; OUTPUT_LEN]) {{\n    infer_with(input, output, |_| {{}});\n}}\n\n\
         /// Runs one image, calling `after_layer(i)` after layer `i` (for per-layer cost).\n\
         #[inline(always)]\n\
         pub fn infer_with(\n    input: &[f32; INPUT_LEN],\n    output: &mut [f32; OUTPUT_LEN],\n    mut after_layer: impl FnMut(usize),\n) {{\n    \
         ARENA.with(|arena| {{\n        #[allow(unused_variables)]\n        let arena = &mut arena[..];\n{body}    }});\n}}"
    );
    Ok(GeneratedModel {
        model_rs: model,
        weights_rs: weights,
        plan,
        weights_bytes,
    })
}

/// Appends layer `index` to a model: its function (bound to its places in `plan`, with a
/// doc line from the layer) to `out.0` and its call, then `after_layer`, to `out.1`.
/// `call` is the kernel call with its weights filled in; `value` the activations' type.
pub(crate) fn emit_layer(
    out: (&mut String, &mut String),
    index: usize,
    (layer, info): (&Layer, &LayerSummary),
    code: &LayerCode,
    plan: &MemoryPlan,
    call: &str,
    value: &str,
) -> Result<(), String> {
    let inputs: Vec<Place> = layer.inputs.iter().map(|&v| plan.places[v]).collect();
    let (bind, call) = bind_layer(&inputs, plan.places[index + 1], plan.scratch[index], call)?;
    let inputs_desc: Vec<String> = layer
        .inputs
        .iter()
        .zip(&info.input_shapes)
        .map(|(v, s)| format!("value {v} ({s})"))
        .collect();
    let doc = format!(
        "Layer {index}, {}: {}; {} -> {}; {} MACs.",
        inert(&layer.name),
        code.describe,
        inputs_desc.join(" + "),
        info.output,
        info.macs
    );
    let (functions, body) = out;
    let _ = writeln!(
        functions,
        "{}",
        layer_function(&format!("layer_{index}"), &doc, code, &bind, &call, value)
    );
    let _ = writeln!(
        body,
        "        layer_{index}(input, output, arena);\n        after_layer({index});"
    );
    Ok(())
}

/// The `Conv2dParams` constructor of a conv layer reading `input`, for `const_params!`.
pub(crate) fn conv_params_expr(c: &Conv2dSpec, input: Shape3) -> String {
    if c.is_depthwise() {
        format!(
            "Conv2dParams::depthwise({}, {:?}, {:?}, {:?}, {})",
            shape_expr(input),
            c.kernel,
            c.stride,
            c.padding,
            act_expr(c.activation)
        )
    } else {
        format!(
            "Conv2dParams::new({}, {}, {:?}, {:?}, {:?}, {})",
            shape_expr(input),
            c.out_channels,
            c.kernel,
            c.stride,
            c.padding,
            act_expr(c.activation)
        )
    }
}

/// The Rust identifier of layer `index`'s constants and weight arrays.
pub(crate) fn layer_ident(index: usize, name: &str) -> String {
    format!("L{index}_{}", sanitize(name))
}

/// How a kernel wants its weights laid out.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Packing {
    /// As exported (depthwise: `[channel][ky][kx]`).
    Plain,
    /// [`kernels::pack_conv2d_weights`].
    Conv2d(Conv2dParams),
    /// [`kernels::pack_linear_weights`].
    Linear(LinearParams),
}

impl Packing {
    pub(crate) fn pack(&self, weights: &[f32]) -> Vec<f32> {
        let mut packed = vec![0.0; weights.len()];
        match self {
            Packing::Plain => packed.copy_from_slice(weights),
            Packing::Conv2d(p) => kernels::pack_conv2d_weights(p, weights, &mut packed),
            Packing::Linear(p) => kernels::pack_linear_weights(p, weights, &mut packed),
        }
        packed
    }
}

/// The code of one layer, independent of where its weights and values live.
#[derive(Clone, Debug)]
pub(crate) struct LayerCode {
    /// What the layer computes, for comments.
    pub describe: String,
    /// The declaration of the layer's constant parameters (may be empty).
    pub params: String,
    /// The kernel call; `{w}` and `{b}` stand for the weight and bias slices, `{x0}`,
    /// `{x1}`, ... for the inputs, `{y}` for the output and `{scratch}` for the scratch slice.
    pub call: String,
    /// The kernel function called (for comments).
    pub kernel_fn: String,
    /// The weight layout of a layer with weights; `None` for ops without.
    pub packing: Option<Packing>,
}

/// The parameters and kernel call of one layer: the generator's choice of kernel and its
/// specialisation (const generics, constant shapes) lives here, so that generated models and
/// latency benchmarks run the same code.
pub(crate) fn layer_code(
    ident: &str,
    layer: &Layer,
    info: &LayerSummary,
) -> Result<LayerCode, String> {
    let x0 = info.input_shapes[0];
    let mut params = String::new();
    let code = match &layer.op {
        Op::Conv2d(c) => {
            let p = Conv2dParams::new(
                x0,
                c.out_channels,
                c.kernel,
                c.stride,
                c.padding,
                c.activation,
            )
            .map_err(|e| e.to_string())?;
            // Kernel size and column stride become const generics of the call, so each
            // distinct shape gets its own unrolled copy of the kernel.
            let fixed = format!("::<{}, {}, {}>", c.kernel[0], c.kernel[1], c.stride[1]);
            let (kernel_fn, packing) = if c.is_depthwise() {
                (format!("depthwise_conv2d_padded{fixed}"), Packing::Plain)
            } else if p.is_pointwise() {
                ("pointwise_conv".to_string(), Packing::Conv2d(p))
            } else {
                (format!("conv2d_fixed{fixed}"), Packing::Conv2d(p))
            };
            let describe = format!(
                "{} {}x{} stride {}x{} padding {}x{}{}",
                if c.is_depthwise() {
                    "depthwise conv2d"
                } else {
                    "conv2d"
                },
                c.kernel[0],
                c.kernel[1],
                c.stride[0],
                c.stride[1],
                c.padding[0],
                c.padding[1],
                act_suffix(c.activation)
            );
            let ctor = conv_params_expr(c, x0);
            let _ = writeln!(
                params,
                "const {ident}: Conv2dParams = const_params!({ctor});"
            );
            let scratch_arg = if c.is_depthwise() { "{scratch}, " } else { "" };
            LayerCode {
                describe,
                params,
                call: format!(
                    "kernels::{kernel_fn}(&{ident}, {{x0}}, {{w}}, {{b}}, {scratch_arg}{{y}});"
                ),
                kernel_fn,
                packing: Some(packing),
            }
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
            let max = matches!(layer.op, Op::MaxPool2d(_));
            let _ = writeln!(
                params,
                "const {ident}: Pool2dParams = const_params!(Pool2dParams::new({}, {:?}, {:?}, {:?}));",
                shape_expr(x0),
                p.kernel,
                p.stride,
                p.padding
            );
            let f = if max { "max_pool2d" } else { "avg_pool2d" };
            LayerCode {
                describe: format!(
                    "{} {}x{} stride {}x{} padding {}x{}",
                    layer.op.name(),
                    p.kernel[0],
                    p.kernel[1],
                    p.stride[0],
                    p.stride[1],
                    p.padding[0],
                    p.padding[1]
                ),
                params,
                call: format!("kernels::{f}(&{ident}, {{x0}}, {{y}});"),
                kernel_fn: f.to_string(),
                packing: None,
            }
        }
        Op::GlobalAvgPool => LayerCode {
            describe: "global average pool".to_string(),
            params,
            call: format!(
                "kernels::global_avg_pool({}, {{x0}}, {{y}});",
                shape_expr(x0)
            ),
            kernel_fn: "global_avg_pool".to_string(),
            packing: None,
        },
        Op::Add(a) => {
            let xs: Vec<String> = (0..layer.inputs.len())
                .map(|k| format!("{{x{k}}}"))
                .collect();
            LayerCode {
                describe: format!(
                    "add of {} values{}",
                    layer.inputs.len(),
                    act_suffix(a.activation)
                ),
                params,
                call: format!(
                    "kernels::add(&[{}], {}, {{y}});",
                    xs.join(", "),
                    act_expr(a.activation)
                ),
                kernel_fn: "add".to_string(),
                packing: None,
            }
        }
        Op::Linear(l) => {
            let p = LinearParams::new(l.in_features, l.out_features, l.activation)
                .map_err(|e| e.to_string())?;
            let _ = writeln!(
                params,
                "const {ident}: LinearParams = const_params!(LinearParams::new({}, {}, {}));",
                l.in_features,
                l.out_features,
                act_expr(l.activation)
            );
            LayerCode {
                describe: format!(
                    "linear {} -> {}{}",
                    l.in_features,
                    l.out_features,
                    act_suffix(l.activation)
                ),
                params,
                call: format!("kernels::linear(&{ident}, {{x0}}, {{w}}, {{b}}, {{y}});"),
                kernel_fn: "linear".to_string(),
                packing: Some(Packing::Linear(p)),
            }
        }
    };
    Ok(code)
}

/// One layer as a function of its own, `#[inline(never)]`: its code is then the same
/// wherever it is compiled, in a model or alone in a latency benchmark. Inlined among its
/// neighbours, LLVM compiled the same layer up to 1.6 times as expensively in one network as
/// in another (register pressure across layers), which no per-layer measurement can
/// predict; the call costs a few instructions per layer.
/// `value` is the activations' Rust type (`f32` or `i8`).
pub(crate) fn layer_function(
    fn_name: &str,
    doc: &str,
    code: &LayerCode,
    bind: &str,
    call: &str,
    value: &str,
) -> String {
    let params: String = code.params.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "/// {doc}\n\
         #[inline(never)]\n\
         #[allow(unused_variables)]\n\
         fn {fn_name}(input: &[{value}; INPUT_LEN], output: &mut [{value}; OUTPUT_LEN], arena: &mut [{value}]) {{\n\
         {params}    {bind}\n    {call}\n}}\n"
    )
}

/// The statement that binds a layer's inputs, output and scratch buffer to the caller's
/// arrays (`input`, `output`) or to slices of `arena`, and `call` with those names filled in.
pub(crate) fn bind_layer(
    inputs: &[Place],
    output: Place,
    scratch: Option<Span>,
    call: &str,
) -> Result<(String, String), String> {
    let mut arena_inputs = Vec::new();
    let mut input_exprs = Vec::new();
    for place in inputs {
        match *place {
            Place::Input => input_exprs.push("&input[..]".to_string()),
            Place::Arena { offset, len } => {
                input_exprs.push(format!("a{}", arena_inputs.len()));
                arena_inputs.push(format!("Span::new({offset}, {len})"));
            }
            Place::Output => return Err("reads the network output".into()),
        }
    }
    let names: Vec<String> = (0..arena_inputs.len()).map(|k| format!("a{k}")).collect();
    let pattern = if names.is_empty() {
        "_".to_string()
    } else {
        format!("[{}]", names.join(", "))
    };
    let scratch_span = scratch;
    let scratch = scratch.map(|sp| format!("Span::new({}, {})", sp.offset, sp.len));
    let ins = arena_inputs.join(", ");
    let (bind, y, scratch_expr) = match (output, &scratch) {
        (Place::Arena { offset, len }, None) => (
            format!(
                "let ({pattern}, y) = Arena::split(arena, [{ins}], Span::new({offset}, {len}));"
            ),
            "y",
            "&mut []",
        ),
        (Place::Arena { offset, len }, Some(sc)) => (
            format!(
                "let ({pattern}, y, scratch) = Arena::split_with_scratch(arena, [{ins}], Span::new({offset}, {len}), {sc});"
            ),
            "y",
            "scratch",
        ),
        (Place::Output, None) if names.is_empty() => (String::new(), "&mut output[..]", "&mut []"),
        (Place::Output, None) => (
            format!("let {pattern} = Arena::inputs(arena, [{ins}]);"),
            "&mut output[..]",
            "&mut []",
        ),
        (Place::Output, Some(sc)) => (
            format!("let ({pattern}, scratch) = Arena::split(arena, [{ins}], {sc});"),
            "&mut output[..]",
            "scratch",
        ),
        (Place::Input, _) => return Err("writes the network input".into()),
    };
    // The arena slices are made opaque to the optimiser: otherwise the layer's code depends
    // on where the plan put them (register allocation differed by up to 2% on small layers
    // between offsets), which a latency table, measuring layers alone, cannot know.
    // Re-sliced to their constant lengths afterwards, so the kernels still know those.
    let mut opaque: Vec<(String, usize, &str)> = names
        .iter()
        .zip(inputs.iter().filter_map(|p| p.span()))
        .map(|(n, s)| (n.clone(), s.len, "&"))
        .collect();
    if let (Place::Arena { len, .. }, "y") = (output, y) {
        opaque.push(("y".into(), len, "&mut "));
    }
    if let (Some(sc), "scratch") = (scratch_span, scratch_expr) {
        opaque.push(("scratch".into(), sc.len, "&mut "));
    }
    let bind = if opaque.is_empty() {
        bind
    } else {
        let names: Vec<&str> = opaque.iter().map(|(n, _, _)| n.as_str()).collect();
        let tuple = format!("({},)", names.join(", "));
        let sliced: Vec<String> = opaque
            .iter()
            .map(|(n, len, r)| format!("{r}{n}[..{len}]"))
            .collect();
        format!(
            "{bind}\n    let {tuple} = core::hint::black_box({tuple});\n    let {tuple} = ({},);",
            sliced.join(", ")
        )
    };
    let call = call.replace("{scratch}", scratch_expr);
    let mut call = call.replace("{y}", y);
    for (k, e) in input_exprs.iter().enumerate() {
        call = call.replace(&format!("{{x{k}}}"), e);
    }
    Ok((bind, call))
}

/// Scratch f32 each layer needs while it runs: a zero-padded input plane for padded
/// depthwise convolutions (see `kernels::f32::depthwise_conv2d_padded`), else nothing.
pub fn scratch_lens(export: &Export) -> Vec<usize> {
    scratch_lens_of(export.arch(), export.summary())
}

/// [`scratch_lens`] of a validated architecture.
pub(crate) fn scratch_lens_of(arch: &Arch, summary: &ArchSummary) -> Vec<usize> {
    arch.layers
        .iter()
        .zip(&summary.layers)
        .map(|(layer, info)| layer_scratch_len(layer, info))
        .collect()
}

/// Scratch f32 one layer needs (see [`scratch_lens`]).
pub(crate) fn layer_scratch_len(layer: &Layer, info: &LayerSummary) -> usize {
    match &layer.op {
        Op::Conv2d(c) if c.is_depthwise() => Conv2dParams::depthwise(
            info.input_shapes[0],
            c.kernel,
            c.stride,
            c.padding,
            c.activation,
        )
        .map(|p| kernels::depthwise_scratch_len(&p))
        .unwrap_or(0),
        _ => 0,
    }
}

/// The arena plan of a validated export, scratch buffers included (the same plan the
/// generated code uses).
pub fn plan_for(export: &Export) -> MemoryPlan {
    plan_memory_with_scratch(export.summary(), &scratch_lens(export))
}

/// Text from an export for a comment of generated code (or any generated file): a name
/// that passes [`check_name`] as it is, anything else as an escaped string literal (no
/// newline, carriage return or control character survives `{:?}`). The reader refuses such
/// names already; this keeps the generator safe on its own.
pub(crate) fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    if check_name(text).is_ok() {
        text.into()
    } else {
        format!("{text:?}").into()
    }
}

/// An identifier from a layer name: ASCII upper case, other characters as `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn shape_expr(s: Shape3) -> String {
    format!("Shape3::new({}, {}, {})", s.channels, s.height, s.width)
}

fn act_expr(a: Activation) -> &'static str {
    match a {
        Activation::None => "Activation::None",
        Activation::Relu => "Activation::Relu",
        Activation::Relu6 => "Activation::Relu6",
    }
}

fn act_suffix(a: Activation) -> &'static str {
    match a {
        Activation::None => "",
        Activation::Relu => ", relu",
        Activation::Relu6 => ", relu6",
    }
}

/// Writes `pub static NAME: [f32; N] = [...];`, 8 values a line, each printed so that it
/// reads back to the same f32 (Rust's `{:?}` is the shortest round-trip form). Returns bytes.
pub(crate) fn emit_array(out: &mut String, name: &str, values: &[f32], doc: &str) -> u64 {
    emit_static(out, (name, "f32"), values, doc, 8, |v| format!("{v:?}"))
}

/// Writes `pub static NAME: [TY; N] = [...];` (`decl` is `(NAME, TY)`) after a doc line,
/// `per_line` literals a line, each written by `literal`. Returns the array's bytes. (Weights
/// go through [`hidden::emit_hidden`] instead: these are the test images.)
pub(crate) fn emit_static<T>(
    out: &mut String,
    (name, ty): (&str, &str),
    values: &[T],
    doc: &str,
    per_line: usize,
    literal: impl Fn(&T) -> String,
) -> u64 {
    let n = values.len();
    let _ = writeln!(
        out,
        "\n/// {doc}: {n} values.\npub static {name}: [{ty}; {n}] = ["
    );
    for chunk in values.chunks(per_line) {
        out.push_str("    ");
        for v in chunk {
            let _ = write!(out, "{}, ", literal(v));
        }
        out.pop();
        out.push('\n');
    }
    out.push_str("];\n");
    std::mem::size_of_val(values) as u64
}

/// Formats Rust source with rustfmt when it is installed; returns the source unchanged
/// otherwise (the generator already emits tidy code).
pub fn rustfmt(source: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return source.to_string();
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(source.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => {
            String::from_utf8(out.stdout).unwrap_or_else(|_| source.to_string())
        }
        _ => source.to_string(),
    }
}

/// Writes `text` to `dir/rel`, creating folders as needed.
pub(crate) fn write_file(dir: &Path, rel: &str, text: &str) -> Result<(), CodegenError> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| CodegenError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    fs::write(&path, text).map_err(|source| CodegenError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{random_export, tiny_cnn_arch};

    /// True for a line of generated Rust that is a comment (doc or plain).
    fn is_comment(line: &str) -> bool {
        line.trim_start().starts_with("//")
    }

    #[test]
    fn export_text_reaches_generated_code_only_in_comments_as_validated_names() {
        let mut arch = tiny_cnn_arch("zqmodel");
        arch.dataset = "zqdata".into();
        for (i, layer) in arch.layers.iter_mut().enumerate() {
            layer.name = format!("zq{i}.x");
        }
        let export = random_export(arch, 7).unwrap();
        let model = generate_model(&export).unwrap();
        let mut tokens: Vec<String> = export
            .arch()
            .layers
            .iter()
            .map(|l| l.name.clone())
            .collect();
        tokens.extend(["zqmodel".into(), "zqdata".into()]);
        for text in [&model.model_rs, &model.weights_rs] {
            for line in text.lines() {
                // Printable ASCII only: nothing from the export can smuggle in a control
                // character or a look-alike.
                assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
                if line.contains("zq") {
                    assert!(is_comment(line), "export text outside a comment: {line}");
                    assert!(tokens.iter().any(|t| line.contains(t.as_str())), "{line}");
                }
            }
        }
    }

    #[test]
    fn hostile_names_are_escaped_even_past_the_reader() {
        // The reader refuses such names (tests/bad_exports.rs); the generator must be safe
        // on its own: the names are swapped in after validation.
        let export = random_export(tiny_cnn_arch("tiny"), 3).unwrap();
        let mut arch = export.arch().clone();
        let evil = "x\n}\nfn evil() { std::process::exit(3) }\n/*\r*/ //";
        arch.name = evil.into();
        arch.dataset = evil.into();
        for layer in &mut arch.layers {
            layer.name = format!("{evil}{}", layer.name);
        }
        let model = generate(
            &arch,
            export.summary(),
            plan_for(&export),
            WeightSource::Shared,
        )
        .unwrap();
        for text in [&model.model_rs, &model.weights_rs] {
            for line in text.lines() {
                if line.contains("evil") {
                    assert!(is_comment(line), "injected: {line}");
                }
                assert!(!line.contains('\r'), "{line:?}");
            }
            assert!(!text.contains("\nfn evil"), "{text}");
        }
        assert_eq!(inert("conv1"), "conv1");
        assert_eq!(inert("a\nb"), "\"a\\nb\"");
    }
}
