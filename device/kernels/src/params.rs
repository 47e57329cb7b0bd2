//! Shapes, activations and layer parameters, shared by every number format.
//!
//! The shape parameters ([`Conv2dParams`], [`Pool2dParams`], ...) are shared by every number
//! format: an int8 family (`i8`, per-channel weight scales) sits beside [`crate::f32`] and
//! takes the same parameters plus its quantisation data. Parameters are validated when they
//! are built (`const fn new`), so a shape that cannot work is refused at plan time (or at
//! compile time of a generated crate), never by a panic inside a kernel.
//!
//! Activations are channel-major (CHW), like the export format.

use core::fmt;

/// The activation fused into a kernel's epilogue (`"none"`, `"relu"`, `"relu6"` in exports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    /// Applies the activation to one value.
    ///
    /// Written with comparisons rather than `f32::max`: on Cortex-M4/M7 (no VMAXNM) `max`
    /// becomes a call to libm's `fmaxf`, about 15 instructions per value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => max_f32(x, 0.0),
            Activation::Relu6 => min_f32(max_f32(x, 0.0), 6.0),
        }
    }
}

/// `max(a, b)` as one compare and select (see [`Activation::apply`]); NaN in `a` gives `b`.
///
/// With the `fpv5` feature (Cortex-M7 and other FPv5 cores, which have `vmaxnm`) this is
/// `f32::max`, one instruction; elsewhere that would be a call to libm's `fmaxf`.
#[inline(always)]
pub fn max_f32(a: f32, b: f32) -> f32 {
    #[cfg(feature = "fpv5")]
    {
        a.max(b)
    }
    #[cfg(not(feature = "fpv5"))]
    {
        if a > b { a } else { b }
    }
}

/// `min(a, b)`, the counterpart of [`max_f32`].
#[inline(always)]
pub fn min_f32(a: f32, b: f32) -> f32 {
    #[cfg(feature = "fpv5")]
    {
        a.min(b)
    }
    #[cfg(not(feature = "fpv5"))]
    {
        if a < b { a } else { b }
    }
}

/// The shape of one activation: channels x height x width, stored CHW.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape3 {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Shape3 {
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        Shape3 {
            channels,
            height,
            width,
        }
    }

    /// Number of values; `usize::MAX` when the product overflows (a shape no buffer can
    /// hold, so length checks against real slices still fail instead of wrapping to a small
    /// number). [`Shape3::checked_len`] tells the two apart.
    pub const fn len(&self) -> usize {
        match self.checked_len() {
            Some(n) => n,
            None => usize::MAX,
        }
    }

    /// Number of values, `None` when the product overflows `usize`.
    pub const fn checked_len(&self) -> Option<usize> {
        match self.channels.checked_mul(self.height) {
            Some(ch) => ch.checked_mul(self.width),
            None => None,
        }
    }

    /// True when the shape holds no value.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels per channel (`usize::MAX` on overflow, as [`Shape3::len`]).
    pub const fn plane(&self) -> usize {
        self.height.saturating_mul(self.width)
    }
}

impl fmt::Display for Shape3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// Why a layer's shape cannot be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeError {
    /// A dimension (channels, height, width, kernel, feature count) is zero.
    ZeroDimension,
    /// A stride is zero.
    ZeroStride,
    /// The kernel does not fit the padded input along one axis (0 = height, 1 = width).
    KernelLargerThanInput {
        axis: usize,
        kernel: usize,
        padded_input: usize,
    },
    /// Pooling padding must be at most half the kernel, or a window could hold only padding.
    PoolPaddingTooLarge {
        axis: usize,
        kernel: usize,
        padding: usize,
    },
    /// Depthwise convolution needs as many output channels as input channels.
    DepthwiseChannelMismatch {
        in_channels: usize,
        out_channels: usize,
    },
    /// The padded input or the output shape does not fit `usize` along one axis (0 =
    /// height, 1 = width, 2 = the whole output): sizes from an untrusted file, refused
    /// rather than wrapped.
    Overflow { axis: usize },
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let axis_name = |a: usize| if a == 0 { "height" } else { "width" };
        match *self {
            ShapeError::ZeroDimension => write!(f, "a dimension is zero"),
            ShapeError::ZeroStride => write!(f, "a stride is zero"),
            ShapeError::KernelLargerThanInput {
                axis,
                kernel,
                padded_input,
            } => write!(
                f,
                "kernel {} {kernel} is larger than the padded input {padded_input}",
                axis_name(axis)
            ),
            ShapeError::PoolPaddingTooLarge {
                axis,
                kernel,
                padding,
            } => write!(
                f,
                "pooling padding {padding} along the {} is more than half the kernel {kernel}",
                axis_name(axis)
            ),
            ShapeError::DepthwiseChannelMismatch {
                in_channels,
                out_channels,
            } => write!(
                f,
                "depthwise convolution needs in_channels == out_channels, got {in_channels} and {out_channels}"
            ),
            ShapeError::Overflow { axis } => write!(
                f,
                "the {} overflows (input, kernel, stride or padding far too large)",
                match axis {
                    0 => "padded height",
                    1 => "padded width",
                    _ => "output size",
                }
            ),
        }
    }
}

/// Output length along one axis: `floor((input + 2 * padding - kernel) / stride) + 1`.
pub const fn output_dim(
    axis: usize,
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<usize, ShapeError> {
    if input == 0 || kernel == 0 {
        return Err(ShapeError::ZeroDimension);
    }
    if stride == 0 {
        return Err(ShapeError::ZeroStride);
    }
    // Checked: the sizes may come from an untrusted export, and a wrapped sum would pass
    // the test below with a nonsense shape.
    let padded_input = match padding.checked_mul(2) {
        Some(p2) => match input.checked_add(p2) {
            Some(v) => v,
            None => return Err(ShapeError::Overflow { axis }),
        },
        None => return Err(ShapeError::Overflow { axis }),
    };
    if kernel > padded_input {
        return Err(ShapeError::KernelLargerThanInput {
            axis,
            kernel,
            padded_input,
        });
    }
    Ok((padded_input - kernel) / stride + 1)
}

/// The geometry of a sliding-window layer (convolution or pooling), validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub input: Shape3,
    pub output: Shape3,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Window {
    const fn new(
        input: Shape3,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<Self, ShapeError> {
        if input.channels == 0 || out_channels == 0 {
            return Err(ShapeError::ZeroDimension);
        }
        let out_h = match output_dim(0, input.height, kernel[0], stride[0], padding[0]) {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        let out_w = match output_dim(1, input.width, kernel[1], stride[1], padding[1]) {
            Ok(v) => v,
            Err(e) => return Err(e),
        };
        let output = Shape3::new(out_channels, out_h, out_w);
        if input.checked_len().is_none() || output.checked_len().is_none() {
            return Err(ShapeError::Overflow { axis: 2 });
        }
        Ok(Window {
            input,
            output,
            kernel,
            stride,
            padding,
        })
    }

    /// The range of kernel offsets `k` along one axis for which `out * stride + k - padding`
    /// falls inside the input; empty ranges are returned as `lo == hi`.
    #[inline(always)]
    pub(crate) fn valid_taps(&self, axis: usize, out: usize) -> (usize, usize) {
        let origin = (out * self.stride[axis]) as isize - self.padding[axis] as isize;
        let size = if axis == 0 {
            self.input.height
        } else {
            self.input.width
        } as isize;
        let kernel = self.kernel[axis] as isize;
        let lo = (-origin).clamp(0, kernel);
        let hi = (size - origin).clamp(lo, kernel);
        (lo as usize, hi as usize)
    }

    /// Kernel columns `[lo, hi)` that land inside the input for every one of the `pixels`
    /// output columns starting at `ox` (given the column stride `sw`).
    #[inline(always)]
    pub(crate) fn columns_valid_for_all(
        &self,
        ox: usize,
        pixels: usize,
        sw: usize,
    ) -> (usize, usize) {
        let pw = self.padding[1];
        let kw = self.kernel[1];
        let lo = pw.saturating_sub(ox * sw).min(kw);
        let hi = (self.input.width + pw)
            .saturating_sub((ox + pixels - 1) * sw)
            .min(kw);
        (lo, hi.max(lo))
    }

    /// Output columns `[lo, hi)` whose whole window lies inside the input width (no padding).
    pub(crate) fn interior_columns(&self) -> (usize, usize) {
        let [_, sw] = self.stride;
        let [_, pw] = self.padding;
        let kw = self.kernel[1];
        let lo = pw.div_ceil(sw).min(self.output.width);
        // Last column x with x * sw - pw + kw <= width.
        let hi = if self.input.width + pw >= kw {
            ((self.input.width + pw - kw) / sw + 1).min(self.output.width)
        } else {
            0
        };
        (lo, hi.max(lo))
    }
}

/// A convolution (dense or depthwise), validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub window: Window,
    pub activation: Activation,
}

impl Conv2dParams {
    /// A dense convolution (`groups == 1`).
    pub const fn new(
        input: Shape3,
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        activation: Activation,
    ) -> Result<Self, ShapeError> {
        match Window::new(input, out_channels, kernel, stride, padding) {
            Ok(window) => Ok(Conv2dParams { window, activation }),
            Err(e) => Err(e),
        }
    }

    /// A depthwise convolution (`groups == in_channels == out_channels`).
    pub const fn depthwise(
        input: Shape3,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        activation: Activation,
    ) -> Result<Self, ShapeError> {
        Self::new(input, input.channels, kernel, stride, padding, activation)
    }

    pub const fn input(&self) -> Shape3 {
        self.window.input
    }

    pub const fn output(&self) -> Shape3 {
        self.window.output
    }

    /// Weights of a dense convolution: `out * in * kh * kw` (saturating: `usize::MAX`
    /// matches no real slice, where a wrapped product could).
    pub const fn dense_weight_len(&self) -> usize {
        self.window
            .output
            .channels
            .saturating_mul(self.window.input.channels)
            .saturating_mul(self.window.kernel[0])
            .saturating_mul(self.window.kernel[1])
    }

    /// Weights of a depthwise convolution: `channels * kh * kw` (saturating).
    pub const fn depthwise_weight_len(&self) -> usize {
        self.window
            .input
            .channels
            .saturating_mul(self.window.kernel[0])
            .saturating_mul(self.window.kernel[1])
    }

    /// Multiply-accumulates of a dense convolution (saturating).
    pub const fn dense_macs(&self) -> usize {
        self.window
            .output
            .len()
            .saturating_mul(self.window.input.channels)
            .saturating_mul(self.window.kernel[0])
            .saturating_mul(self.window.kernel[1])
    }

    /// True when the dense convolution is a plain 1x1 (pointwise) one: kernel 1, stride 1,
    /// no padding; [`crate::f32::pointwise_conv`] handles those faster.
    pub const fn is_pointwise(&self) -> bool {
        let w = &self.window;
        w.kernel[0] == 1
            && w.kernel[1] == 1
            && w.stride[0] == 1
            && w.stride[1] == 1
            && w.padding[0] == 0
            && w.padding[1] == 0
    }
}

/// A max or average pooling window, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    pub window: Window,
}

impl Pool2dParams {
    pub const fn new(
        input: Shape3,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Result<Self, ShapeError> {
        let mut axis = 0;
        while axis < 2 {
            // `padding > kernel / 2` is `2 * padding > kernel` without the overflow.
            if padding[axis] > kernel[axis] / 2 {
                return Err(ShapeError::PoolPaddingTooLarge {
                    axis,
                    kernel: kernel[axis],
                    padding: padding[axis],
                });
            }
            axis += 1;
        }
        match Window::new(input, input.channels, kernel, stride, padding) {
            Ok(window) => Ok(Pool2dParams { window }),
            Err(e) => Err(e),
        }
    }

    pub const fn output(&self) -> Shape3 {
        self.window.output
    }
}

/// A fully connected layer, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearParams {
    pub in_features: usize,
    pub out_features: usize,
    pub activation: Activation,
}

impl LinearParams {
    pub const fn new(
        in_features: usize,
        out_features: usize,
        activation: Activation,
    ) -> Result<Self, ShapeError> {
        if in_features == 0 || out_features == 0 {
            return Err(ShapeError::ZeroDimension);
        }
        Ok(LinearParams {
            in_features,
            out_features,
            activation,
        })
    }

    /// `in * out` (saturating, as [`Conv2dParams::dense_weight_len`]).
    pub const fn weight_len(&self) -> usize {
        self.in_features.saturating_mul(self.out_features)
    }
}

/// Unwraps a shape result in a `const` context, so that a generated crate with a bad shape
/// fails to compile instead of failing at run time.
#[macro_export]
macro_rules! const_params {
    ($e:expr) => {
        match $e {
            Ok(p) => p,
            Err(_) => panic!("invalid layer shape"),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_dim_matches_the_formula() {
        assert_eq!(output_dim(0, 28, 3, 1, 1), Ok(28));
        assert_eq!(output_dim(0, 28, 2, 2, 0), Ok(14));
        assert_eq!(output_dim(0, 7, 3, 2, 1), Ok(4));
        assert_eq!(output_dim(0, 1, 1, 1, 0), Ok(1));
        assert_eq!(output_dim(0, 1, 3, 1, 1), Ok(1));
    }

    #[test]
    fn kernel_larger_than_padded_input_is_refused() {
        assert_eq!(
            output_dim(1, 2, 5, 1, 1),
            Err(ShapeError::KernelLargerThanInput {
                axis: 1,
                kernel: 5,
                padded_input: 4
            })
        );
        let e = Conv2dParams::new(
            Shape3::new(1, 1, 1),
            4,
            [3, 3],
            [1, 1],
            [0, 0],
            Activation::None,
        );
        assert!(matches!(e, Err(ShapeError::KernelLargerThanInput { .. })));
        assert_eq!(output_dim(0, 4, 3, 0, 0), Err(ShapeError::ZeroStride));
        assert_eq!(output_dim(0, 0, 1, 1, 0), Err(ShapeError::ZeroDimension));
        assert!(matches!(
            Pool2dParams::new(Shape3::new(1, 4, 4), [2, 2], [2, 2], [2, 2]),
            Err(ShapeError::PoolPaddingTooLarge { .. })
        ));
    }

    #[test]
    fn huge_sizes_are_refused_not_wrapped() {
        // 2^63 padding: `2 * padding` wraps to 0 in release builds.
        let half = 1usize << (usize::BITS - 1);
        assert_eq!(
            output_dim(0, 4, 2, 2, half),
            Err(ShapeError::Overflow { axis: 0 })
        );
        assert_eq!(
            output_dim(1, usize::MAX, 1, 1, 1),
            Err(ShapeError::Overflow { axis: 1 })
        );
        // Pool padding 2^63 with kernel 2 is refused as too large, not wrapped to 0.
        assert!(matches!(
            Pool2dParams::new(Shape3::new(1, 4, 4), [2, 2], [2, 2], [half, half]),
            Err(ShapeError::PoolPaddingTooLarge { .. })
        ));
        let huge = Shape3::new(half + 1, 2, 1);
        assert_eq!(huge.checked_len(), None);
        assert_eq!(huge.len(), usize::MAX);
        assert_eq!(
            Shape3::new(usize::MAX, 1, 1).checked_len(),
            Some(usize::MAX)
        );
        assert_eq!(
            Conv2dParams::new(huge, 1, [1, 1], [1, 1], [0, 0], Activation::None),
            Err(ShapeError::Overflow { axis: 2 })
        );
        let wide = Conv2dParams::new(
            Shape3::new(1 << 20, 1, 1),
            1 << 40,
            [1 << 20, 1],
            [1, 1],
            [1 << 19, 0],
            Activation::None,
        )
        .unwrap();
        assert_eq!(wide.dense_weight_len(), usize::MAX);
        assert_eq!(
            LinearParams::new(half, 4, Activation::None)
                .unwrap()
                .weight_len(),
            usize::MAX
        );
    }

    #[test]
    fn valid_taps_and_interior_columns() {
        let p = Conv2dParams::new(
            Shape3::new(1, 5, 5),
            1,
            [3, 3],
            [1, 1],
            [1, 1],
            Activation::None,
        )
        .unwrap();
        assert_eq!(p.window.valid_taps(0, 0), (1, 3));
        assert_eq!(p.window.valid_taps(0, 2), (0, 3));
        assert_eq!(p.window.valid_taps(0, 4), (0, 2));
        assert_eq!(p.window.interior_columns(), (1, 4));
        // Kernel wider than the unpadded input: no interior column at all.
        let p = Conv2dParams::new(
            Shape3::new(1, 2, 2),
            1,
            [3, 3],
            [1, 1],
            [1, 1],
            Activation::None,
        )
        .unwrap();
        let (lo, hi) = p.window.interior_columns();
        assert_eq!(lo, hi);
    }
}
