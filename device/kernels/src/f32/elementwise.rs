//! Element-wise kernels: residual add (with a fused activation) and stand-alone activations.

use crate::Activation;

/// `output = activation(inputs[0] + inputs[1] + ...)`; every input has `output.len()` values.
#[inline(always)]
pub fn add(inputs: &[&[f32]], activation: Activation, output: &mut [f32]) {
    assert!(!inputs.is_empty(), "add needs at least one input");
    for x in inputs {
        assert_eq!(x.len(), output.len(), "add input length");
    }
    match inputs {
        [a, b] => {
            // Four at a time: the loop overhead is a third of the work otherwise.
            let mut outs = output.chunks_exact_mut(4);
            let mut a4 = a.chunks_exact(4);
            let mut b4 = b.chunks_exact(4);
            for ((o, a), b) in (&mut outs).zip(&mut a4).zip(&mut b4) {
                for i in 0..4 {
                    o[i] = activation.apply(a[i] + b[i]);
                }
            }
            let rest = outs.into_remainder().iter_mut();
            for ((o, a), b) in rest.zip(a4.remainder()).zip(b4.remainder()) {
                *o = activation.apply(a + b);
            }
        }
        [first, rest @ ..] => {
            output.copy_from_slice(first);
            for x in rest {
                for (o, v) in output.iter_mut().zip(x.iter()) {
                    *o += v;
                }
            }
            activate_in_place(activation, output);
        }
        [] => unreachable!(),
    }
}

/// Applies an activation in place.
pub fn activate_in_place(activation: Activation, values: &mut [f32]) {
    if activation == Activation::None {
        return;
    }
    for v in values {
        *v = activation.apply(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::f32::test_util::{Rng, assert_close};
    use std::vec::Vec;

    #[test]
    fn add_two_and_three_inputs_with_activations() {
        let mut rng = Rng::new(500);
        let a: Vec<f32> = rng.vec(37).iter().map(|v| v * 8.0).collect();
        let b: Vec<f32> = rng.vec(37).iter().map(|v| v * 8.0).collect();
        let c: Vec<f32> = rng.vec(37).iter().map(|v| v * 8.0).collect();
        for act in [Activation::None, Activation::Relu, Activation::Relu6] {
            let mut got = vec![0.0; 37];
            add(&[&a, &b], act, &mut got);
            let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| act.apply(x + y)).collect();
            assert_close(&got, &want, 0.0, "add2");
            add(&[&a, &b, &c], act, &mut got);
            let want: Vec<f32> = (0..37).map(|i| act.apply(a[i] + b[i] + c[i])).collect();
            assert_close(&got, &want, 1e-6, "add3");
        }
        let mut one = vec![0.0; 1];
        add(&[&[-2.0]], Activation::Relu, &mut one);
        assert_eq!(one, [0.0]);
    }

    #[test]
    fn relu_and_relu6() {
        let mut v = [-1.0, 0.5, 7.0];
        activate_in_place(Activation::Relu6, &mut v);
        assert_eq!(v, [0.0, 0.5, 6.0]);
        let mut v = [-1.0, 0.5, 7.0];
        activate_in_place(Activation::Relu, &mut v);
        assert_eq!(v, [0.0, 0.5, 7.0]);
    }
}
