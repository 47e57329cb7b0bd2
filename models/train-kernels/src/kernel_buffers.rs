//! Memory for dnal's CPU kernels without the work a plain `vec![0.0; n]` does for nothing.
//!
//! A training step allocates tens of megabytes of activations and gradients. `vec![0.0; n]`
//! zeroes them on the calling thread before a kernel overwrites every element anyway (`perf`
//! showed the `memset`: BENCHMARKS.md, "Per convolution against PyTorch"), and scratch space
//! (im2col columns) was
//! allocated and zeroed afresh on every call. Here outputs start unwritten and are zeroed, where
//! a kernel accumulates, in parallel chunks by the threads that then use them; scratch space is
//! kept per thread.

use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Storage for `len` floats that a kernel has yet to write.
///
/// # Example
/// ```
/// use dnal_train_kernels::kernel_buffers::{Unwritten, written};
/// let mut out = Unwritten::new(4);
/// written(out.slots(), |i| i as f32);
/// // SAFETY: `written` wrote every slot.
/// let out = unsafe { out.assume_written() };
/// assert_eq!(out, [0.0, 1.0, 2.0, 3.0]);
/// ```
#[derive(Debug)]
pub struct Unwritten {
    values: Vec<f32>,
    len: usize,
}

impl Unwritten {
    /// Room for `len` floats, not written (and not zeroed).
    pub fn new(len: usize) -> Self {
        Self {
            values: Vec::with_capacity(len),
            len,
        }
    }

    /// The `len` slots, for the kernel to write.
    pub fn slots(&mut self) -> &mut [MaybeUninit<f32>] {
        &mut self.values.spare_capacity_mut()[..self.len]
    }

    /// The written values.
    ///
    /// # Safety
    /// Every element of [`Self::slots`] must have been written.
    pub unsafe fn assume_written(mut self) -> Vec<f32> {
        // SAFETY: the capacity is at least `len` (`with_capacity`) and the caller
        // guarantees the first `len` elements are initialised.
        unsafe { self.values.set_len(self.len) };
        self.values
    }
}

/// Writes `value(i)` into slot `i` of `slots` and returns them as the floats they now hold.
pub fn written(slots: &mut [MaybeUninit<f32>], mut value: impl FnMut(usize) -> f32) -> &mut [f32] {
    for (i, slot) in slots.iter_mut().enumerate() {
        slot.write(value(i));
    }
    // SAFETY: the loop above initialised every element, and `MaybeUninit<f32>` has the
    // layout of `f32`.
    unsafe { &mut *(slots as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

thread_local! {
    /// Each thread's scratch floats, grown to the largest request and never shrunk.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` scratch floats of this thread, kept from call to call (their values are
/// whatever the last user left: `f` must write before it reads).
///
/// A nested call on the same thread (which a kernel should not make) gets a fresh buffer
/// rather than a panic.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            if scratch.len() < len {
                scratch.resize(len, 0.0);
            }
            f(&mut scratch[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_slots_become_the_vector() {
        let mut out = Unwritten::new(5);
        let view = written(out.slots(), |i| (i * i) as f32);
        view[0] = -1.0;
        // SAFETY: every slot was written above.
        let out = unsafe { out.assume_written() };
        assert_eq!(out, [-1.0, 1.0, 4.0, 9.0, 16.0]);
    }

    #[test]
    fn scratch_is_reused_and_grows() {
        with_scratch(3, |s| s.copy_from_slice(&[1.0, 2.0, 3.0]));
        // The same thread's next call sees the same memory, grown where it must.
        with_scratch(2, |s| assert_eq!(s, [1.0, 2.0]));
        with_scratch(5, |s| assert_eq!(s, [1.0, 2.0, 3.0, 0.0, 0.0]));
    }

    #[test]
    fn nested_scratch_gets_its_own_buffer() {
        with_scratch(2, |outer| {
            outer.fill(7.0);
            with_scratch(2, |inner| {
                inner.fill(1.0);
            });
            assert_eq!(outer, [7.0, 7.0]);
        });
    }
}
