//! A hand-written firmware that runs a tiny CNN with dnal-kernels on a Cortex-M4F.
//!
//! The network: a 1x6x6 image -> 3x3 convolution to 4 channels (relu) -> global average
//! pooling -> a linear layer to 3 logits. Shapes and parameters are `const`, checked at
//! compile time; activations live in one static arena; weights are stored in PyTorch order
//! and packed for the kernels once at start-up (dnal's code generator packs them at
//! generation time instead and stores the packed order in flash).
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use dnal_kernels::arena::{Arena, Span, StaticArena};
use dnal_kernels::{Activation, Conv2dParams, LinearParams, Shape3, const_params, f32 as kernels};

/// The image: one channel, 6x6, CHW.
const INPUT: Shape3 = Shape3::new(1, 6, 6);
/// 3x3 convolution, stride 1, padding 1, 4 output channels, relu fused. A shape that cannot
/// work (a kernel larger than the padded input, a zero dimension) fails to compile.
const CONV: Conv2dParams = const_params!(Conv2dParams::new(
    INPUT,
    4,
    [3, 3],
    [1, 1],
    [1, 1],
    Activation::Relu
));
/// What the convolution writes: 4x6x6.
const FEATURES: Shape3 = CONV.output();
/// 4 pooled features -> 3 logits.
const FC: LinearParams = const_params!(LinearParams::new(4, 3, Activation::None));

/// The arena layout, planned by hand: the convolution's output, then the pooled features.
/// (The linear layer reads the pooled features and writes the caller's logits.)
const CONV_OUT: Span = Span::new(0, FEATURES.len());
const POOLED: Span = Span::new(FEATURES.len(), FEATURES.channels);
const ARENA_LEN: usize = FEATURES.len() + FEATURES.channels;
/// Zero-initialised, so it lands in .bss and costs no flash.
static ARENA: StaticArena<ARENA_LEN> = StaticArena::new();

/// Convolution weights, `[out][in][kh][kw]` (PyTorch order): a vertical edge, a horizontal
/// edge, a centre spot and a box blur.
#[rustfmt::skip]
const CONV_W: [f32; 36] = [
    -1.0, 0.0, 1.0,  -1.0, 0.0, 1.0,  -1.0, 0.0, 1.0,
    -1.0, -1.0, -1.0,  0.0, 0.0, 0.0,  1.0, 1.0, 1.0,
    0.0, 0.0, 0.0,  0.0, 1.0, 0.0,  0.0, 0.0, 0.0,
    0.11, 0.11, 0.11,  0.11, 0.11, 0.11,  0.11, 0.11, 0.11,
];
const CONV_B: [f32; 4] = [0.0, 0.0, -0.5, 0.0];
/// Linear weights, `[out][in]`: class 0 "vertical", 1 "horizontal", 2 "spot".
#[rustfmt::skip]
const FC_W: [f32; 12] = [
    1.0, -0.5, 0.0, 0.1,
    -0.5, 1.0, 0.0, 0.1,
    0.0, 0.0, 1.0, -0.2,
];
const FC_B: [f32; 3] = [0.0, 0.0, 0.0];

/// A vertical bar in the middle of the image.
#[rustfmt::skip]
const IMAGE: [f32; 36] = [
    0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
    0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
    0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
    0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
    0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
    0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
];

/// Runs one image through the network.
fn infer(image: &[f32], conv_w: &[f32], fc_w: &[f32], logits: &mut [f32]) {
    ARENA.with(|arena| {
        // `Arena::split` hands out the layer's inputs and its output from one arena and
        // panics if they overlap: the borrow checker cannot see that spans are disjoint.
        let ([], features) = Arena::split(arena, [], CONV_OUT);
        kernels::conv2d(&CONV, image, conv_w, &CONV_B, features);
        let ([features], pooled) = Arena::split(arena, [CONV_OUT], POOLED);
        kernels::global_avg_pool(FEATURES, features, pooled);
        let [pooled] = Arena::inputs(arena, [POOLED]);
        kernels::linear(&FC, pooled, fc_w, &FC_B, logits);
    });
}

#[entry]
fn main() -> ! {
    // The kernels read weights in their own blocked order.
    let mut conv_w = [0.0; CONV.dense_weight_len()];
    kernels::pack_conv2d_weights(&CONV, &CONV_W, &mut conv_w);
    let mut fc_w = [0.0; FC.weight_len()];
    kernels::pack_linear_weights(&FC, &FC_W, &mut fc_w);

    let mut logits = [0.0f32; 3];
    infer(&IMAGE, &conv_w, &fc_w, &mut logits);
    let class = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap_or(0);
    hprintln!("dnal-kernels example: logits {:?}, class {}", logits, class);
    debug::exit(debug::EXIT_SUCCESS);
    loop {}
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    hprintln!("dnal-kernels example: panic");
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}
