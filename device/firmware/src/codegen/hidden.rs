//! Weights the optimiser cannot read: statics defined in assembly and declared to Rust as
//! `extern`, so that a network's code, and so its cost, does not depend on its values.
//!
//! A plain `static` array's values are in LLVM's sight, and it folds them into the code: a
//! bias into an immediate (whose instruction count depends on its bits), a small unrolled
//! layer's products, an all-zero channel. The instructions a network ran then depended on
//! its weights, so a network measured at its fit could measure over its budget after
//! finetuning. Passing the arrays through `core::hint::black_box` hid the values but also
//! the address: a pointer from nowhere might alias the activations a kernel writes, so
//! kernels loaded a channel's weights again after each store (+0.7% on an int8
//! MobileNetV2 on the M7). An `extern` static defined by `global_asm!` is a known object,
//! distinct from the arena, at a link-time address, whose contents LLVM cannot know: the
//! code is the same for any values and as good as with a plain static.
//!
//! The data is written as `.byte` / `.4byte` directives, exactly the bytes of the declared
//! Rust type on a little-endian target (every board's): integers as integers, `f32` by its
//! bits, so they read back exactly.

use std::fmt::Write as _;

use dnal_kernels::int8::Requantize;

/// Alignment of every hidden static: the largest a weight type needs (`f32`, `i32`,
/// `Requantize`, the word-aligned int8 codes that `LDRD` reads).
const ALIGN: usize = 4;

/// A value that can be written as assembler data with exactly its Rust layout.
pub(crate) trait AsmData {
    /// The directive that writes one value (or each of its fields).
    const DIRECTIVE: &'static str;
    /// Values per source line.
    const PER_LINE: usize;
    /// Its literal(s), comma-separated, for [`Self::DIRECTIVE`].
    fn literal(&self) -> String;
}

impl AsmData for i8 {
    const DIRECTIVE: &'static str = ".byte";
    const PER_LINE: usize = 16;
    fn literal(&self) -> String {
        self.to_string()
    }
}

impl AsmData for i32 {
    const DIRECTIVE: &'static str = ".4byte";
    const PER_LINE: usize = 8;
    fn literal(&self) -> String {
        self.to_string()
    }
}

impl AsmData for f32 {
    const DIRECTIVE: &'static str = ".4byte";
    const PER_LINE: usize = 8;
    fn literal(&self) -> String {
        format!("{:#010x}", self.to_bits())
    }
}

/// `#[repr(C)]`: the multiplier's word, then the shift's.
impl AsmData for Requantize {
    const DIRECTIVE: &'static str = ".4byte";
    const PER_LINE: usize = 4;
    fn literal(&self) -> String {
        format!("{}, {}", self.multiplier, self.shift)
    }
}

/// Writes `pub safe static NAME: TY` holding `values`, defined in assembly (see the module
/// docs), after a doc line; `ty` is the Rust type, whose layout must be `values` back to
/// back (an array of them, or a `#[repr(C)]` wrapper of one). Returns the bytes.
pub(crate) fn emit_hidden<T: AsmData>(
    out: &mut String,
    (name, ty): (&str, &str),
    values: &[T],
    doc: &str,
) -> u64 {
    let n = values.len();
    let _ = writeln!(
        out,
        "\n/// {doc}: {n} values.\n\
         core::arch::global_asm!(\n    \
         \".pushsection .rodata.dnal.{name}, \\\"a\\\", %progbits\",\n    \
         \".balign {ALIGN}\",\n    \
         \".globl {name}\",\n    \
         \".hidden {name}\",\n    \
         \"{name}:\","
    );
    for chunk in values.chunks(T::PER_LINE) {
        let literals: Vec<String> = chunk.iter().map(AsmData::literal).collect();
        let _ = writeln!(out, "    \"{} {}\",", T::DIRECTIVE, literals.join(", "));
    }
    let _ = writeln!(
        out,
        "    \".balign {ALIGN}\",\n    \".popsection\",\n);\n\
         // SAFETY: defined just above, in a read-only section, aligned to {ALIGN} bytes, the\n\
         // type's bytes (padded to {ALIGN}), each a valid value of it (integers, float bits).\n\
         unsafe extern \"C\" {{\n    pub safe static {name}: {ty};\n}}"
    );
    std::mem::size_of_val(values) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnal_kernels::int8::WordAligned;

    #[test]
    fn every_weight_type_fits_the_alignment_and_layout_written() {
        assert!(std::mem::align_of::<f32>() <= ALIGN);
        assert!(std::mem::align_of::<i32>() <= ALIGN);
        assert!(std::mem::align_of::<Requantize>() <= ALIGN);
        assert_eq!(std::mem::align_of::<WordAligned<5>>(), ALIGN);
        assert_eq!(std::mem::size_of::<Requantize>(), 8);
        // WordAligned pads the codes to its alignment, as the closing `.balign` pads the
        // section: the symbol holds the type's whole size.
        assert_eq!(std::mem::size_of::<WordAligned<5>>(), 8);
        let r = Requantize {
            multiplier: 7,
            shift: -3,
        };
        // SAFETY: `Requantize` is `#[repr(C)]` of two i32 (size checked above).
        let words: [i32; 2] = unsafe { std::mem::transmute(r) };
        assert_eq!(words, [7, -3]);
    }

    #[test]
    fn floats_are_written_by_their_bits() {
        assert_eq!((-0.5f32).literal(), "0xbf000000");
        assert_eq!(f32::from_bits(0x3dcc_cccd).literal(), "0x3dcccccd");
        assert_eq!((-7i8).literal(), "-7");
    }

    #[test]
    fn a_hidden_static_is_declared_extern_and_defined_in_assembly() {
        let mut out = String::new();
        let bytes = emit_hidden(&mut out, ("L0_B", "[f32; 2]"), &[1.0f32, -2.0], "bias");
        assert_eq!(bytes, 8);
        assert!(out.contains("\".4byte 0x3f800000, 0xc0000000\","), "{out}");
        assert!(out.contains("\".globl L0_B\","), "{out}");
        assert!(out.contains("pub safe static L0_B: [f32; 2];"), "{out}");
        assert!(!out.contains("pub static"), "{out}");
    }
}
