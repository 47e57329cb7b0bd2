//! The scaled-sigmoid gate of DNAL.
//!
//! One architecture parameter `s` per channel scales that channel by `sigmoid(delta * s)`.
//! `delta` is not trained: the search raises it from 1 to 1e4 so that the soft gate turns into
//! a binary one (a channel lives iff `s > 0`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};

/// How the gates act in a forward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GateMode {
    /// Gates pass everything (weight stage and finetuning).
    Off,
    /// `x * sigmoid(delta * s)` (gate stage).
    Soft {
        /// The scale of the sigmoid.
        delta: f64,
    },
    /// `x * [s > 0]`: the binarised architecture.
    Hard,
}

/// Configuration of a [`Gate`].
#[derive(Config, Debug)]
pub struct GateConfig {
    /// Channels the gate scales.
    pub channels: usize,
}

impl GateConfig {
    /// A gate at `s = 0` (every channel half open under a soft gate, alive under a hard one's
    /// `s > 0` rule only once trained).
    pub fn init(&self, device: &Device) -> Gate {
        Gate {
            s: Param::from_tensor(Tensor::zeros([self.channels], device)),
        }
    }
}

/// Per-channel scaled-sigmoid gate.
///
/// # Shapes
/// - `s`: `[channels]`
/// - input and output of [`Gate::forward`]: `[batch, channels, height, width]`
#[derive(Module, Debug)]
pub struct Gate {
    /// The architecture parameters.
    pub s: Param<Tensor<1>>,
}

impl Gate {
    /// The gate values `g` in this mode, or `None` when the gate is off.
    pub fn values(&self, mode: GateMode) -> Option<Tensor<1>> {
        match mode {
            GateMode::Off => None,
            GateMode::Soft { delta } => Some(sigmoid(self.s.val().mul_scalar(delta))),
            GateMode::Hard => Some(self.s.val().greater_elem(0.0).float()),
        }
    }

    /// Scales every channel of `x` by its gate value.
    pub fn forward(&self, x: Tensor<4>, mode: GateMode) -> Tensor<4> {
        match self.values(mode) {
            None => x,
            Some(g) => scale_channels(x, g),
        }
    }

    /// Which channels live (`s > 0`; equivalently `sigmoid(delta * s) > 0.5` for any delta).
    pub fn alive(&self) -> Vec<bool> {
        let s = self
            .s
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        s.iter().map(|&v| v > 0.0).collect()
    }

    /// The raw parameters as numbers.
    pub fn scores(&self) -> Vec<f32> {
        self.s
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    }
}

/// `x` with channel `c` scaled by `g[c]`.
///
/// # Shapes
/// - `x` and output: `[batch, channels, height, width]`
/// - `g`: `[channels]`
pub fn scale_channels(x: Tensor<4>, g: Tensor<1>) -> Tensor<4> {
    let [c] = g.dims();
    x * g.reshape([1, c, 1, 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn gradient_wrt_s_is_delta_p_one_minus_p() {
        let device = Device::flex().autodiff();
        let s_values = vec![-0.3f32, 0.0, 0.2, 0.05];
        let gate = Gate {
            s: Param::from_tensor(Tensor::from_data(
                TensorData::new(s_values.clone(), [4]),
                &device,
            ))
            .set_require_grad(true),
        };
        for delta in [1.0, 7.5, 40.0] {
            // With an all-ones input and a sum as loss, dL/dg = H*W per channel.
            let x = Tensor::<4>::ones([1, 4, 2, 3], &device);
            let loss = gate.forward(x, GateMode::Soft { delta }).sum();
            let grads = loss.backward();
            let grad = gate
                .s
                .val()
                .grad(&grads)
                .expect("s gets a gradient")
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            for (i, &s) in s_values.iter().enumerate() {
                let p = 1.0 / (1.0 + (-(delta as f32) * s).exp());
                let expected = 6.0 * delta as f32 * p * (1.0 - p);
                assert!(
                    (grad[i] - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                    "delta {delta} s {s}: {} vs {expected}",
                    grad[i]
                );
            }
        }
    }

    #[test]
    fn hard_gates_follow_the_sign_of_s() {
        let device = Device::flex();
        let gate = Gate {
            s: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![-1.0f32, 0.0, 2.0], [3]),
                &device,
            )),
        };
        let g = gate
            .values(GateMode::Hard)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(g, vec![0.0, 0.0, 1.0]);
        assert_eq!(gate.alive(), vec![false, false, true]);
        assert!(gate.values(GateMode::Off).is_none());
    }
}
