//! int8 fully connected layer.

use super::{OutputStage, Requantize};
use crate::LinearParams;

/// `output[r] = requantize[r](bias[r] + sum_i (input[i] - input_zero) * weights[r][i])`,
/// clamped by `stage`.
///
/// # Shapes
/// - `input`: `[in_features]` (a flattened CHW value)
/// - `weights`: `[out_features, in_features]`, symmetric int8
/// - `bias`, `requantize`, `output`: `[out_features]`
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn linear(
    params: &LinearParams,
    input_zero: i32,
    weights: &[i8],
    bias: &[i32],
    requantize: &[Requantize],
    stage: OutputStage,
    input: &[i8],
    output: &mut [i8],
) {
    let (n_in, n_out) = (params.in_features, params.out_features);
    assert_eq!(input.len(), n_in, "int8 linear input length");
    assert_eq!(output.len(), n_out, "int8 linear output length");
    assert_eq!(weights.len(), n_in * n_out, "int8 linear weight length");
    assert_eq!(bias.len(), n_out, "int8 linear bias length");
    assert_eq!(requantize.len(), n_out, "int8 linear requantize length");
    for (r, o) in output.iter_mut().enumerate() {
        let row = &weights[r * n_in..(r + 1) * n_in];
        let acc = row.iter().zip(input).fold(bias[r], |acc, (w, x)| {
            acc + (*x as i32 - input_zero) * *w as i32
        });
        *o = stage.requantize(&requantize[r], acc);
    }
}
