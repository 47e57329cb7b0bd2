//! Reading and writing int8 export folders.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use dnal_kernels::int8::Requantize;
use safetensors::Dtype;

use super::{AddRescale, Int8Export, Int8Layer, Int8Weights};
use crate::io::{
    ExpectedTensors, io_error, read_arch, read_tensors, with_path, write_export_files,
};
use crate::limits::{MAX_PARAMS, MAX_WEIGHTS_HEADER_BYTES};
use crate::{ARCH_FILE, Arch, ArchSummary, ExportError, Op, Precision, WEIGHTS_FILE};

/// A tensor of an int8 export, by dtype.
#[derive(Clone, Debug, PartialEq)]
enum Data {
    I8(Vec<i8>),
    I32(Vec<i32>),
    F32(Vec<f32>),
}

impl Data {
    fn dtype(&self) -> Dtype {
        match self {
            Data::I8(_) => Dtype::I8,
            Data::I32(_) => Dtype::I32,
            Data::F32(_) => Dtype::F32,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Data::I8(v) => v.iter().map(|c| *c as u8).collect(),
            Data::I32(v) => v.iter().flat_map(|c| c.to_le_bytes()).collect(),
            Data::F32(v) => v.iter().flat_map(|c| c.to_le_bytes()).collect(),
        }
    }
}

/// The tensors an int8 layer list needs: name, dtype and shape.
fn expected_tensors(arch: &Arch, summary: &ArchSummary) -> ExpectedTensors {
    let mut expected = BTreeMap::new();
    for (layer, s) in arch.layers.iter().zip(&summary.layers) {
        let n = &layer.name;
        if let Some([w, b]) = &s.tensor_shapes {
            expected.insert(format!("{n}.weight"), (Dtype::I8, w.clone()));
            expected.insert(format!("{n}.bias"), (Dtype::I32, b.clone()));
            expected.insert(format!("{n}.weight_scale"), (Dtype::F32, b.clone()));
            expected.insert(format!("{n}.multiplier"), (Dtype::I32, b.clone()));
            expected.insert(format!("{n}.shift"), (Dtype::I32, b.clone()));
        } else if matches!(layer.op, Op::Add(_)) {
            let entries = vec![layer.inputs.len() + 1];
            expected.insert(format!("{n}.multiplier"), (Dtype::I32, entries.clone()));
            expected.insert(format!("{n}.shift"), (Dtype::I32, entries));
        }
    }
    expected
}

impl Int8Export {
    /// Reads and validates an int8 export folder; an f32 export is refused with
    /// [`ExportError::WrongPrecision`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Int8Export, ExportError> {
        let dir = dir.as_ref();
        let (arch, summary) = read_arch(dir)?;
        arch.expect_precision(&dir.join(ARCH_FILE), Precision::Int8)?;
        Int8Export::load_weights(dir, arch, summary)
    }

    /// The rest of [`Int8Export::load`], once `arch.json` is read and checked.
    pub(crate) fn load_weights(
        dir: &Path,
        arch: Arch,
        summary: ArchSummary,
    ) -> Result<Int8Export, ExportError> {
        let arch_path = dir.join(ARCH_FILE);

        let weights_path = dir.join(WEIGHTS_FILE);
        // Weights and biases take at most 4 bytes a parameter, the per-channel scales and
        // requantisation 12 more per bias, the adds' rescales a few KiB.
        let limit = summary.params.min(MAX_PARAMS) * 16 + 2 * MAX_WEIGHTS_HEADER_BYTES;
        let why = format!(
            "the layer list's {} parameters, their scales and a header can take",
            summary.params
        );
        let expected = expected_tensors(&arch, &summary);
        let mut tensors: BTreeMap<String, Data> = BTreeMap::new();
        read_tensors(
            &weights_path,
            (limit, &why),
            &expected,
            |name, dtype, _, raw| {
                let data = match dtype {
                    Dtype::I8 => Data::I8(raw.iter().map(|b| *b as i8).collect()),
                    Dtype::I32 => Data::I32(
                        raw.chunks_exact(4)
                            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    ),
                    _ => Data::F32(
                        raw.chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    ),
                };
                tensors.insert(name, data);
            },
        )?;
        let layers = layers_from_tensors(&arch, tensors);
        Int8Export::new(arch, layers).map_err(|e| match e {
            ExportError::InvalidTensor { name, reason, .. } => ExportError::InvalidTensor {
                path: weights_path.clone(),
                name,
                reason,
            },
            other => with_path(other, &arch_path),
        })
    }

    /// Writes the export into `dir` (created if needed), each file through a temporary name
    /// and a rename, `weights.safetensors` first, as [`crate::Export::write`] does.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<(), ExportError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| io_error(e, dir))?;
        let expected = expected_tensors(&self.arch, &self.summary);
        let tensors = tensors_of(&self.arch, &self.layers)
            .into_iter()
            .map(|(name, data)| {
                let shape = expected[&name].1.clone();
                let (dtype, bytes) = (data.dtype(), data.bytes());
                (name, dtype, shape, bytes)
            })
            .collect();
        write_export_files(dir, &self.arch, tensors)
    }
}

/// The layers' data as the tensors `weights.safetensors` holds.
fn tensors_of(arch: &Arch, layers: &[Int8Layer]) -> BTreeMap<String, Data> {
    let mut out = BTreeMap::new();
    for (layer, data) in arch.layers.iter().zip(layers) {
        let n = &layer.name;
        let split = |r: &[Requantize]| {
            (
                Data::I32(r.iter().map(|r| r.multiplier).collect()),
                Data::I32(r.iter().map(|r| r.shift).collect()),
            )
        };
        match data {
            Int8Layer::Weighted(w) => {
                out.insert(format!("{n}.weight"), Data::I8(w.weight.clone()));
                out.insert(format!("{n}.bias"), Data::I32(w.bias.clone()));
                out.insert(
                    format!("{n}.weight_scale"),
                    Data::F32(w.weight_scale.clone()),
                );
                let (m, s) = split(&w.requantize);
                out.insert(format!("{n}.multiplier"), m);
                out.insert(format!("{n}.shift"), s);
            }
            Int8Layer::Add(a) => {
                let mut all = a.inputs.clone();
                all.push(a.output);
                let (m, s) = split(&all);
                out.insert(format!("{n}.multiplier"), m);
                out.insert(format!("{n}.shift"), s);
            }
            Int8Layer::Pool => {}
        }
    }
    out
}

/// The layers' data from a complete set of tensors (names, dtypes and shapes checked).
fn layers_from_tensors(arch: &Arch, mut tensors: BTreeMap<String, Data>) -> Vec<Int8Layer> {
    let mut take = |name: String| tensors.remove(&name).expect("checked tensor set");
    let requantize = |m: Data, s: Data| match (m, s) {
        (Data::I32(m), Data::I32(s)) => m
            .into_iter()
            .zip(s)
            .map(|(multiplier, shift)| Requantize { multiplier, shift })
            .collect::<Vec<_>>(),
        _ => unreachable!("checked dtypes"),
    };
    arch.layers
        .iter()
        .map(|layer| {
            let n = &layer.name;
            match layer.op {
                Op::Conv2d(_) | Op::Linear(_) => {
                    let (Data::I8(weight), Data::I32(bias), Data::F32(weight_scale)) = (
                        take(format!("{n}.weight")),
                        take(format!("{n}.bias")),
                        take(format!("{n}.weight_scale")),
                    ) else {
                        unreachable!("checked dtypes")
                    };
                    let requantize =
                        requantize(take(format!("{n}.multiplier")), take(format!("{n}.shift")));
                    Int8Layer::Weighted(Int8Weights {
                        weight,
                        bias,
                        weight_scale,
                        requantize,
                    })
                }
                Op::Add(_) => {
                    let mut inputs =
                        requantize(take(format!("{n}.multiplier")), take(format!("{n}.shift")));
                    let output = inputs.pop().expect("n + 1 entries");
                    Int8Layer::Add(AddRescale { inputs, output })
                }
                _ => Int8Layer::Pool,
            }
        })
        .collect()
}
