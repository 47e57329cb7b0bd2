//! Flex tensors as plain `f32` slices and back, for dnal's CPU kernels (`conv_op`,
//! `batch_norm_op`, `max_pool_op`).

use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;

/// The tensor with a contiguous layout, copying only when its layout is strided.
pub(crate) fn contiguous(tensor: FlexTensor) -> FlexTensor {
    if tensor.as_slice::<f32>().is_some() {
        tensor
    } else {
        tensor.to_contiguous()
    }
}

/// The elements of an `f32` tensor made [`contiguous`].
pub(crate) fn f32s(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("an f32 tensor made contiguous by `contiguous`")
}

/// A flex tensor of `shape` owning `values`.
pub(crate) fn from_f32s<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}
