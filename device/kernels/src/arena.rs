//! The static activation arena of a generated model, and safe access to disjoint parts of it.
//!
//! The code generator plans at generation time where every intermediate value lives (an
//! offset and a length in one arena of `f32` or `i8` values, see `dnal_firmware::codegen::plan`). A layer then needs its
//! inputs as shared slices and its output as a mutable slice of the same arena:
//! [`Arena::split`] hands those out, checking that the output overlaps no input.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// What an arena holds: the activations' number format (`f32`, or `i8` codes).
pub trait ArenaValue: Copy {
    /// The value a fresh arena holds (all-zero bits, so that it lands in `.bss`).
    const ZERO: Self;
}

impl ArenaValue for f32 {
    const ZERO: Self = 0.0;
}

impl ArenaValue for i8 {
    const ZERO: Self = 0;
}

/// A `static` arena of `N` values (f32 unless told otherwise), zero-initialised, so it lands
/// in `.bss`.
pub struct StaticArena<const N: usize, T: ArenaValue = f32> {
    values: UnsafeCell<[T; N]>,
    busy: AtomicBool,
}

// SAFETY: the values are only reached through `with`, which hands out one `&mut` at a
// time (guarded by `busy`), so sharing the arena between threads or interrupts is sound.
unsafe impl<const N: usize, T: ArenaValue> Sync for StaticArena<N, T> {}

impl<const N: usize, T: ArenaValue> StaticArena<N, T> {
    pub const fn new() -> Self {
        StaticArena {
            values: UnsafeCell::new([T::ZERO; N]),
            busy: AtomicBool::new(false),
        }
    }

    /// Runs `f` with exclusive access to the arena.
    ///
    /// Panics if the arena is already in use (an inference re-entered from an interrupt or
    /// another thread), since both would write the same buffers.
    pub fn with<R>(&self, f: impl FnOnce(&mut [T; N]) -> R) -> R {
        if self.busy.swap(true, Ordering::Acquire) {
            panic!("the model's activation arena is already in use (re-entrant inference)");
        }
        // SAFETY: `busy` was false and is now true, so no other `&mut` to the values
        // exists until it is reset below.
        let values = unsafe { &mut *self.values.get() };
        let result = f(values);
        self.busy.store(false, Ordering::Release);
        result
    }
}

impl<const N: usize, T: ArenaValue> Default for StaticArena<N, T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A value's place in the arena: `offset .. offset + len` (in values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub const fn new(offset: usize, len: usize) -> Self {
        Span { offset, len }
    }

    const fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// Borrowing helpers on an arena slice.
pub struct Arena;

impl Arena {
    /// Splits `arena` into `K` shared input slices and one mutable output slice.
    ///
    /// Panics if a span is out of the arena or an input overlaps the output; the planner
    /// never produces such spans, so a panic here means a generator bug.
    pub fn split<T, const K: usize>(
        arena: &mut [T],
        inputs: [Span; K],
        output: Span,
    ) -> ([&[T]; K], &mut [T]) {
        let (before, rest) = arena.split_at_mut(output.offset);
        let (out, after) = rest.split_at_mut(output.len);
        let before: &[T] = before;
        let after: &[T] = after;
        let inputs = inputs.map(|span| {
            if span.end() <= output.offset {
                &before[span.offset..span.end()]
            } else if span.offset >= output.end() {
                &after[span.offset - output.end()..span.end() - output.end()]
            } else {
                panic!("an input buffer overlaps the output buffer in the arena");
            }
        });
        (inputs, out)
    }

    /// Like [`Arena::split`], plus a second mutable slice `scratch` for the layer's
    /// temporary data; it may overlap no input and not the output.
    pub fn split_with_scratch<T, const K: usize>(
        arena: &mut [T],
        inputs: [Span; K],
        output: Span,
        scratch: Span,
    ) -> ([&[T]; K], &mut [T], &mut [T]) {
        let overlaps = |a: Span, b: Span| a.offset < b.end() && b.offset < a.end();
        assert!(
            !overlaps(output, scratch),
            "the scratch buffer overlaps the output buffer"
        );
        for span in &inputs {
            assert!(
                !overlaps(*span, scratch),
                "an input buffer overlaps the scratch buffer"
            );
        }
        // Cut the arena at the two mutable spans; every input lies inside one of the three
        // pieces around them.
        let scratch_last = scratch.offset > output.offset;
        let (first, second) = if scratch_last {
            (output, scratch)
        } else {
            (scratch, output)
        };
        let (piece0, rest) = arena.split_at_mut(first.offset);
        let (first_slice, rest) = rest.split_at_mut(first.len);
        let (piece1, rest) = rest.split_at_mut(second.offset - first.end());
        let (second_slice, piece2) = rest.split_at_mut(second.len);
        let (piece0, piece1, piece2): (&[T], &[T], &[T]) = (piece0, piece1, piece2);
        let ins = inputs.map(|span| {
            if span.end() <= first.offset {
                &piece0[span.offset..span.end()]
            } else if span.offset >= first.end() && span.end() <= second.offset {
                &piece1[span.offset - first.end()..span.end() - first.end()]
            } else if span.offset >= second.end() {
                &piece2[span.offset - second.end()..span.end() - second.end()]
            } else {
                panic!("an input buffer overlaps the output or scratch buffer in the arena");
            }
        });
        if scratch_last {
            (ins, first_slice, second_slice)
        } else {
            (ins, second_slice, first_slice)
        }
    }

    /// Splits `arena` into `K` shared input slices (for a layer that writes outside the arena).
    pub fn inputs<T, const K: usize>(arena: &[T], inputs: [Span; K]) -> [&[T]; K] {
        inputs.map(|span| &arena[span.offset..span.end()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_hands_out_disjoint_slices() {
        let mut buf = [0.0f32; 10];
        for (i, v) in buf.iter_mut().enumerate() {
            *v = i as f32;
        }
        let ([a, b], out) = Arena::split(
            &mut buf,
            [Span::new(0, 2), Span::new(7, 3)],
            Span::new(3, 4),
        );
        assert_eq!(a, &[0.0, 1.0]);
        assert_eq!(b, &[7.0, 8.0, 9.0]);
        out.fill(-1.0);
        assert_eq!(buf[3..7], [-1.0; 4]);
    }

    #[test]
    fn split_with_scratch_on_either_side() {
        let mut buf = [0.0f32; 12];
        let ([a], out, scratch) = Arena::split_with_scratch(
            &mut buf,
            [Span::new(0, 2)],
            Span::new(2, 4),
            Span::new(8, 3),
        );
        assert_eq!((a.len(), out.len(), scratch.len()), (2, 4, 3));
        out.fill(1.0);
        scratch.fill(2.0);
        assert_eq!(buf[2..6], [1.0; 4]);
        assert_eq!(buf[8..11], [2.0; 3]);
        let ([a], out, scratch) = Arena::split_with_scratch(
            &mut buf,
            [Span::new(10, 2)],
            Span::new(5, 4),
            Span::new(0, 5),
        );
        assert_eq!((a.len(), out.len(), scratch.len()), (2, 4, 5));
        scratch.fill(3.0);
        out.fill(4.0);
        assert_eq!(buf[..5], [3.0; 5]);
        assert_eq!(buf[5..9], [4.0; 4]);
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn overlapping_spans_panic() {
        let mut buf = [0.0f32; 10];
        let _ = Arena::split(&mut buf, [Span::new(2, 3)], Span::new(4, 4));
    }

    #[test]
    fn static_arena_gives_exclusive_access_and_detects_reentry() {
        static ARENA: StaticArena<4> = StaticArena::new();
        ARENA.with(|a| a[0] = 1.0);
        assert_eq!(ARENA.with(|a| a[0]), 1.0);
        let reentered = std::panic::catch_unwind(|| ARENA.with(|_| ARENA.with(|_| ())));
        assert!(reentered.is_err());
    }
}
