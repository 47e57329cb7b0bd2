//! Knowledge distillation: a trained network's softened outputs as targets besides the labels.
//!
//! Two students learn from a teacher. The pruned network, while it is finetuned, learns from
//! the trained parent: it starts from the parent's weights but has lost channels, and the
//! parent's softened class probabilities (Hinton, Vinyals and Dean, "Distilling the Knowledge
//! in a Neural Network", 2015) carry how the parent ranks the wrong classes. The int8 network,
//! while it trains quantisation-aware, learns from its own f32 export: the f32 network is what
//! the int8 one should reproduce, so matching its outputs keeps training from wandering off
//! the f32 network's function while it absorbs the rounding. The teacher is trained already,
//! so its guidance costs one forward pass per step and no extra training.

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};
use dnal_datasets::BatchData;
use dnal_models::{GateMode, GatedNet};

use crate::export::ExportNet;

/// The network whose outputs a student learns.
enum Teacher {
    /// The trained parent, an inference copy (batch norm on its running statistics).
    Parent(GatedNet),
    /// An f32 export (batch norm folded), on the inference device.
    Export(ExportNet),
}

/// A teacher, and how much its soft targets weigh.
///
/// The finetune loss is `(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(p_T || q_T)`,
/// where `p_T = softmax(teacher / T)` and `q_T = softmax(student / T)`; `T^2` keeps the soft
/// term's gradient on the scale of the cross entropy's as `T` grows.
pub struct Distillation {
    teacher: Teacher,
    /// The inference device the teacher runs on.
    device: Device,
    /// Weight of the soft term, in (0, 1].
    pub alpha: f64,
    /// Softening temperature T (> 0).
    pub temperature: f64,
}

/// The teacher's softened output for one batch: constants of the student's loss.
pub struct SoftTargets {
    /// `p_T`, `[batch, classes]`.
    probs: Tensor<2>,
    /// `ln p_T`, `[batch, classes]`.
    log_probs: Tensor<2>,
}

impl Distillation {
    /// A teacher from a trained (gated, unpruned) network, run with its gates off on the
    /// inference side of `device`.
    pub fn new(teacher: &GatedNet, device: &Device, alpha: f64, temperature: f64) -> Self {
        Self {
            teacher: Teacher::Parent(teacher.valid()),
            device: device.clone().without_autodiff(),
            alpha,
            temperature,
        }
    }

    /// A teacher from an f32 export, run unquantised on the inference side of `device`.
    pub fn from_export(
        export: &dnal_export::Export,
        device: &Device,
        alpha: f64,
        temperature: f64,
    ) -> Self {
        let device = device.clone().without_autodiff();
        Self {
            teacher: Teacher::Export(ExportNet::new(export, &device)),
            device,
            alpha,
            temperature,
        }
    }

    /// The teacher's soft targets for a batch, placed on `train_device` (no gradient flows
    /// into the teacher).
    ///
    /// # Shapes
    /// - returns probabilities `[batch, classes]`
    pub fn targets(&self, data: &BatchData, train_device: &Device) -> SoftTargets {
        let images = data.images_tensor(&self.device);
        let logits = match &self.teacher {
            Teacher::Parent(parent) => parent.forward(images, GateMode::Off),
            Teacher::Export(export) => export.forward(images),
        };
        let logits = Tensor::<2>::from_data(logits.into_data(), train_device);
        SoftTargets::soften(logits, self.temperature)
    }

    /// The finetune loss from the student's logits, its cross entropy with the labels and the
    /// teacher's soft targets.
    ///
    /// # Shapes
    /// - `student`: `[batch, classes]`
    /// - `cross_entropy`, returns: `[1]`
    pub fn loss(
        &self,
        student: Tensor<2>,
        cross_entropy: Tensor<1>,
        targets: SoftTargets,
    ) -> Tensor<1> {
        let t = self.temperature;
        let log_q = log_softmax(student.div_scalar(t), 1);
        let kl = (targets.probs * (targets.log_probs - log_q))
            .sum_dim(1)
            .mean();
        cross_entropy.mul_scalar(1.0 - self.alpha) + kl.mul_scalar(self.alpha * t * t)
    }
}

impl SoftTargets {
    /// `softmax(logits / temperature)` of `[batch, classes]` logits.
    pub fn soften(logits: Tensor<2>, temperature: f64) -> Self {
        let log_probs = log_softmax(logits.div_scalar(temperature), 1);
        Self {
            probs: log_probs.clone().exp(),
            log_probs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::TensorData;
    use dnal_models::{GatedNetConfig, Shape3, model_spec};

    /// Soft targets from given teacher logits, row-major `[batch, classes]`.
    fn soft(logits: &[f32], classes: usize, temperature: f64, device: &Device) -> SoftTargets {
        let n = logits.len() / classes;
        let logits = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [n, classes]), device);
        SoftTargets::soften(logits, temperature)
    }

    fn untrained_parent(device: &Device) -> GatedNet {
        let spec = model_spec("vgg-small", Shape3::new(1, 28, 28), 10).unwrap();
        GatedNetConfig::new(spec).init(device).unwrap()
    }

    fn softmax(row: &[f32], t: f32) -> Vec<f32> {
        let max = row.iter().cloned().fold(f32::MIN, f32::max);
        let e: Vec<f32> = row.iter().map(|v| ((v - max) / t).exp()).collect();
        let sum: f32 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }

    #[test]
    fn gradient_is_t_times_q_minus_p_over_batch() {
        // With alpha = 1 the loss is T^2 * mean KL; its gradient w.r.t. the student's logits
        // is T * (q_T - p_T) / batch.
        let device = Device::flex().autodiff();
        let distill = Distillation::new(&untrained_parent(&device), &device, 1.0, 4.0);
        let teacher = [2.0f32, -1.0, 0.5, 0.0, 3.0, 1.0];
        let student_values = vec![0.3f32, 0.1, -0.2, 1.5, -0.5, 0.7];
        let student = Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(student_values.clone(), [2, 3]),
            &device,
        ))
        .set_require_grad(true);
        let targets = soft(&teacher, 3, 4.0, &device);
        let ce = Tensor::<1>::zeros([1], &device);
        let loss = distill.loss(student.val(), ce, targets);
        let grads = loss.backward();
        let grad = student
            .val()
            .grad(&grads)
            .expect("the student's logits get a gradient")
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for row in 0..2 {
            let p = softmax(&teacher[row * 3..row * 3 + 3], 4.0);
            let q = softmax(&student_values[row * 3..row * 3 + 3], 4.0);
            for j in 0..3 {
                let expected = 4.0 * (q[j] - p[j]) / 2.0;
                let got = grad[row * 3 + j];
                assert!(
                    (got - expected).abs() < 1e-5,
                    "[{row},{j}] {got} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn matching_the_teacher_leaves_only_the_cross_entropy_share() {
        let device = Device::flex();
        let distill = Distillation::new(&untrained_parent(&device), &device, 0.75, 2.0);
        let logits = [1.0f32, 2.0, -3.0, 0.25];
        let student = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [2, 2]), &device);
        let ce = Tensor::<1>::from_data(TensorData::new(vec![0.8f32], [1]), &device);
        let same = soft(&logits, 2, 2.0, &device);
        let value = distill
            .loss(student.clone(), ce.clone(), same)
            .into_scalar::<f32>();
        assert!((value - 0.2).abs() < 1e-6, "{value}");
        // Any other teacher adds a positive KL term.
        let other = soft(&[0.0, 0.0, 1.0, -1.0], 2, 2.0, &device);
        let value = distill.loss(student, ce, other).into_scalar::<f32>();
        assert!(value > 0.2 + 1e-3, "{value}");
    }

    #[test]
    fn the_teacher_runs_on_its_running_statistics() {
        // The same image gives the same soft targets alone and inside a batch: batch norm of
        // the teacher does not use batch statistics, even when the student trains on autodiff.
        let device = Device::flex().autodiff();
        let distill = Distillation::new(&untrained_parent(&device), &device, 0.5, 3.0);
        let image: Vec<f32> = (0..784)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let other: Vec<f32> = (0..784).map(|i| ((i * 11) % 29) as f32 / 7.0).collect();
        let shape = dnal_datasets::Shape3::new(1, 28, 28);
        let one = BatchData {
            images: image.clone(),
            labels: vec![0],
            shape,
        };
        let two = BatchData {
            images: [image, other].concat(),
            labels: vec![0, 1],
            shape,
        };
        let a = distill
            .targets(&one, &device)
            .probs
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let b = distill
            .targets(&two, &device)
            .probs
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for j in 0..10 {
            assert!(
                (a[j] - b[j]).abs() < 1e-6,
                "class {j}: {} vs {}",
                a[j],
                b[j]
            );
        }
        let sum: f32 = a.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
    }
}
