//! How close the `gemm` crate (dnal's CPU convolutions run on it) comes to this CPU's limit:
//! the f32 FMA peak of one core, measured with independent AVX-512 (or AVX2) FMAs, against
//! single-threaded gemms of the shapes vgg-small and vgg16 train with.
//!
//!     cargo run --release -p dnal-bench --bin gemm_peak

use std::hint::black_box;
use std::time::Instant;

/// GFLOPS of one thread running `reps` rounds of 24 independent 16-lane FMA chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_peak_avx512(reps: usize) -> f64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 24];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let start = Instant::now();
    for _ in 0..reps {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    black_box(acc);
    (reps * 24 * 16 * 2) as f64 / seconds / 1e9
}

/// GFLOPS of one `m x k` by `k x n` gemm, the best of ten.
fn gemm_gflops(m: usize, n: usize, k: usize) -> f64 {
    let (lhs, rhs) = (vec![0.5f32; m * k], vec![0.25f32; k * n]);
    let mut dst = vec![0.0f32; m * n];
    let mut best = f64::MAX;
    for _ in 0..13 {
        let start = Instant::now();
        // SAFETY: the three buffers hold m*k, k*n and m*n elements, row-major with the
        // strides given, and do not overlap.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                false,
                lhs.as_ptr(),
                1,
                k as isize,
                rhs.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    black_box(&dst);
    2.0 * (m * n * k) as f64 / best / 1e9
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        let peak = (0..5)
            .map(|_| unsafe { fma_peak_avx512(20_000_000) })
            .fold(0.0, f64::max);
        println!("FMA peak, one core (AVX-512): {peak:.1} GFLOPS");
    }
    // [O, L] x [L, K]-style shapes of the convolutions (forward: m = positions, n = out
    // channels, k = in_channels * 9).
    for (m, n, k, what) in [
        (784, 32, 288, "vgg-small conv2 fwd"),
        (784, 64, 576, "vgg-small conv4 fwd"),
        (512, 256, 2304, "vgg16 conv6 fwd"),
        (512, 512, 4608, "vgg16 conv9 fwd"),
        (512, 128, 512, "vgg16 conv9 Winograd fwd, one ξ"),
        (512, 256, 512, "vgg16 conv9 Winograd fwd, one ξ, 256 tiles"),
        (256, 256, 256, "vgg16 conv6 Winograd fwd, one ξ"),
        (64, 256, 64, "vgg16 conv2 Winograd fwd, one ξ"),
        (1024, 1024, 1024, "square"),
    ] {
        println!(
            "gemm {m}x{n}x{k} ({what}): {:.1} GFLOPS, one thread",
            gemm_gflops(m, n, k)
        );
    }
}
