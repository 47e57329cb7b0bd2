//! Which burn backend runs the search.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::SearchError;

/// A burn backend the search can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// burn's flex backend: portable Rust, threads and SIMD (the fastest CPU backend here;
    /// BENCHMARKS.md, "CPU backends").
    Cpu,
    /// burn's ndarray backend (kept for comparison; much slower to train).
    Ndarray,
    /// wgpu: Vulkan, Metal or DX12 GPUs; lavapipe runs it on a CPU.
    Wgpu,
    /// CUDA (build with `--features cuda`).
    Cuda,
}

impl Backend {
    /// Every backend's name, as `--backend` takes it.
    pub const NAMES: &[&str] = &["cpu", "ndarray", "wgpu", "cuda"];

    /// The device to compute on (without autodiff).
    pub fn device(self) -> Result<Device, SearchError> {
        match self {
            Backend::Cpu => Ok(Device::flex()),
            // Deprecated upstream in favour of flex; kept for the backend comparison.
            #[allow(deprecated)]
            Backend::Ndarray => Ok(Device::ndarray()),
            Backend::Wgpu => wgpu_device(),
            Backend::Cuda => cuda_device(),
        }
    }
}

fn wgpu_device() -> Result<Device, SearchError> {
    Ok(Device::wgpu(Default::default()))
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device, SearchError> {
    Ok(Device::cuda(0usize))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Device, SearchError> {
    Err(SearchError::BackendMissing {
        backend: "cuda",
        feature: "cuda",
    })
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Cpu => "cpu",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        })
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" | "flex" => Ok(Backend::Cpu),
            "ndarray" => Ok(Backend::Ndarray),
            "wgpu" => Ok(Backend::Wgpu),
            "cuda" => Ok(Backend::Cuda),
            _ => Err(format!(
                "unknown backend {s:?}; choose one of {}",
                Backend::NAMES.join(", ")
            )),
        }
    }
}
