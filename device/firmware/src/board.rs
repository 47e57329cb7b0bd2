//! The boards a model can be deployed to: their target, CPU, memory budget and how to run.

use serde::Serialize;

/// How firmware for a board is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Runner {
    /// A native executable on this machine.
    Native,
    /// `qemu-system-arm -machine MACHINE -cpu CPU` with semihosting.
    QemuSystem {
        machine: &'static str,
        cpu: &'static str,
    },
    /// `qemu-aarch64 -cpu CPU` (Linux user mode).
    QemuUser {
        program: &'static str,
        cpu: &'static str,
    },
    /// `probe-rs run --chip CHIP` on a board attached through a debug probe.
    ProbeRs { chip: &'static str },
}

/// How a board's firmware talks to the host; picks the firmware's `main.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Harness {
    /// Cortex-M under QEMU: semihosting output, marker-counted instructions.
    CortexMQemu,
    /// A real Cortex-M board: defmt over RTT, DWT cycle counter.
    CortexMProbe,
    /// A std executable (host, aarch64 Linux): stdout, markers (or wall time on the host).
    Std,
}

/// What a deployment's cost figures count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum CostUnit {
    /// Instructions executed, counted by the QEMU plugin between marker instructions
    /// (deterministic; not cycles).
    Instructions,
    /// CPU cycles from the DWT cycle counter of a real Cortex-M.
    Cycles,
    /// Wall-clock nanoseconds on this machine (not deterministic).
    WallNanoseconds,
}

impl CostUnit {
    pub fn name(&self) -> &'static str {
        match self {
            CostUnit::Instructions => "instructions",
            CostUnit::Cycles => "cycles",
            CostUnit::WallNanoseconds => "wall_ns",
        }
    }
}

/// A deployment target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Board {
    /// The name `dnal deploy --board` takes.
    pub name: &'static str,
    pub description: &'static str,
    /// Rust target triple; `None` builds for this machine.
    pub target: Option<&'static str>,
    pub cpu: &'static str,
    /// Flash (code + constant data) budget in bytes.
    pub flash_bytes: u64,
    /// RAM (static data + stack) budget in bytes.
    pub ram_bytes: u64,
    /// Where flash and RAM start (for memory.x on Cortex-M).
    pub flash_origin: u64,
    pub ram_origin: u64,
    /// Extra rustc flags for this board's firmware.
    pub rustflags: &'static [&'static str],
    /// Features of dnal-kernels the firmware turns on.
    pub kernel_features: &'static [&'static str],
    pub harness: Harness,
    pub runner: Runner,
    pub cost_unit: CostUnit,
    /// The CPU clock that turns cycles into time, in Hz: the real chip's clock, or for a QEMU
    /// board the clock of a typical chip with this CPU (QEMU has no clock of its own).
    pub clock_hz: u64,
    /// Where `clock_hz` comes from, and for instruction counts what a cycle is assumed to be.
    pub clock_note: &'static str,
}

const MIB: u64 = 1024 * 1024;
const KIB: u64 = 1024;

/// Every board this crate can deploy to.
pub const BOARDS: &[Board] = &[
    Board {
        name: "host",
        description: "this machine, natively (wall-clock cost, for quick checks)",
        target: None,
        cpu: "native",
        flash_bytes: 256 * MIB,
        ram_bytes: 256 * MIB,
        flash_origin: 0,
        ram_origin: 0,
        rustflags: &[],
        kernel_features: &[],
        harness: Harness::Std,
        runner: Runner::Native,
        cost_unit: CostUnit::WallNanoseconds,
        clock_hz: 1_000_000_000,
        clock_note: "wall-clock nanoseconds: 1 unit = 1 ns (no cycle count)",
    },
    Board {
        name: "cortex-m4-qemu",
        description: "Cortex-M4F in QEMU (mps2-an386), budget 1 MiB flash / 256 KiB RAM",
        target: Some("thumbv7em-none-eabihf"),
        cpu: "cortex-m4",
        flash_bytes: MIB,
        ram_bytes: 256 * KIB,
        flash_origin: 0,
        ram_origin: 0x2000_0000,
        // Generic thumbv7em CPU on purpose: `-C target-cpu=cortex-m4` splits every f32
        // multiply-accumulate into vmul + vadd (see kernels::f32::mac).
        rustflags: &[],
        kernel_features: &[],
        harness: Harness::CortexMQemu,
        runner: Runner::QemuSystem {
            machine: "mps2-an386",
            cpu: "cortex-m4",
        },
        cost_unit: CostUnit::Instructions,
        clock_hz: 168_000_000,
        clock_note: "assumed: an STM32F407-class Cortex-M4F at 168 MHz (QEMU's mps2-an386 is a 25 MHz FPGA board); one instruction taken as one cycle, an assumption: QEMU counts instructions, not cycles",
    },
    Board {
        name: "cortex-m7-qemu",
        description: "Cortex-M7 in QEMU (mps2-an500), budget 1 MiB flash / 320 KiB RAM (as STM32F746)",
        target: Some("thumbv7em-none-eabihf"),
        cpu: "cortex-m7",
        flash_bytes: MIB,
        ram_bytes: 320 * KIB,
        flash_origin: 0,
        ram_origin: 0x2000_0000,
        rustflags: &["-C", "target-cpu=cortex-m7"],
        kernel_features: &["fpv5"],
        harness: Harness::CortexMQemu,
        runner: Runner::QemuSystem {
            machine: "mps2-an500",
            cpu: "cortex-m7",
        },
        cost_unit: CostUnit::Instructions,
        clock_hz: 216_000_000,
        clock_note: "assumed: an STM32F746 (Cortex-M7) at 216 MHz, the chip whose budget this board has; one instruction taken as one cycle, an assumption: QEMU counts instructions, not cycles",
    },
    Board {
        name: "aarch64-qemu",
        description: "aarch64 Linux (Cortex-A55 class) in qemu-aarch64 user mode",
        target: Some("aarch64-unknown-linux-gnu"),
        cpu: "cortex-a55",
        flash_bytes: 64 * MIB,
        ram_bytes: 64 * MIB,
        flash_origin: 0,
        ram_origin: 0,
        // Static so qemu-aarch64 needs no sysroot; QEMU 7.2 has no cortex-a55 model, the
        // runner uses cortex-a76 (same ISA for this code).
        rustflags: &[
            "-C",
            "target-feature=+crt-static",
            "-C",
            "target-cpu=cortex-a55",
        ],
        kernel_features: &[],
        harness: Harness::Std,
        runner: Runner::QemuUser {
            program: "qemu-aarch64",
            cpu: "cortex-a76",
        },
        cost_unit: CostUnit::Instructions,
        clock_hz: 1_800_000_000,
        clock_note: "assumed: a Cortex-A55 at 1.8 GHz; one instruction taken as one cycle, an assumption: qemu-aarch64 counts instructions, not cycles",
    },
    Board {
        name: "stm32f746zg",
        description: "STM32F746ZG (Cortex-M7, e.g. NUCLEO-F746ZG) through probe-rs, defmt over RTT",
        target: Some("thumbv7em-none-eabihf"),
        cpu: "cortex-m7",
        flash_bytes: MIB,
        ram_bytes: 320 * KIB,
        flash_origin: 0x0800_0000,
        ram_origin: 0x2000_0000,
        rustflags: &["-C", "target-cpu=cortex-m7"],
        kernel_features: &["fpv5"],
        harness: Harness::CortexMProbe,
        runner: Runner::ProbeRs {
            chip: "STM32F746ZGTx",
        },
        cost_unit: CostUnit::Cycles,
        clock_hz: 216_000_000,
        clock_note: "the STM32F746's maximum clock, 216 MHz (the firmware must configure the PLL for it; after reset the chip runs at 16 MHz)",
    },
    Board {
        name: "nrf52840",
        description: "nRF52840 (Cortex-M4F, e.g. nRF52840-DK) through probe-rs, defmt over RTT",
        target: Some("thumbv7em-none-eabihf"),
        cpu: "cortex-m4",
        flash_bytes: MIB,
        ram_bytes: 256 * KIB,
        flash_origin: 0,
        ram_origin: 0x2000_0000,
        rustflags: &[],
        kernel_features: &[],
        harness: Harness::CortexMProbe,
        runner: Runner::ProbeRs {
            chip: "nRF52840_xxAA",
        },
        cost_unit: CostUnit::Cycles,
        clock_hz: 64_000_000,
        clock_note: "the nRF52840's fixed 64 MHz CPU clock",
    },
];

/// Looks a board up by name.
pub fn board(name: &str) -> Option<&'static Board> {
    BOARDS.iter().find(|b| b.name == name)
}

/// The names of all boards, for error messages and `--help`.
pub fn board_names() -> Vec<&'static str> {
    BOARDS.iter().map(|b| b.name).collect()
}

/// The SIMD instructions a board's int8 kernels use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Int8Simd {
    /// None: the portable kernels.
    #[default]
    None,
    /// The Cortex-M DSP extension (`SMLAD`): dense and 3x3 depthwise convolutions; with
    /// `winograd`, 3x3 convolutions at stride 1 by Winograd's F(2x2, 3x3) where they take it
    /// and pays ([`dnal_kernels::int8::winograd_pays`]): fewer instructions, more arena (the
    /// transformed weights or inputs of a layer, whichever are smaller, as scratch).
    Dsp { winograd: bool },
    /// The Armv8.2 dot product (`SDOT`): dense convolutions; and NEON, which every such
    /// CPU has, for 3x3 depthwise convolutions and requantisation.
    Dot,
}

impl Int8Simd {
    /// Which of its dense convolution kernels a (not depthwise) conv of `params` runs: 0
    /// the portable one (no SIMD, or a receptive field longer than the SIMD kernel takes),
    /// 1 the SIMD one, 2 the `SMLAD` one in blocks of pixel pairs
    /// ([`dnal_kernels::int8::dsp_block_words`]), 3 the `SMLAD` one by Winograd's F(2x2, 3x3)
    /// ([`dnal_kernels::int8::winograd_pays`]). Where this changes with the input channel
    /// count, so does the cost per MAC, and a latency table must not interpolate across.
    pub fn dense_kernel(self, params: &dnal_kernels::Conv2dParams) -> u8 {
        use dnal_kernels::int8::{
            MAX_DSP_ROW, MAX_SDOT_ROW, dsp_block_words, dsp_row_len, sdot_row_len, winograd_pays,
        };
        match self {
            Int8Simd::None => 0,
            Int8Simd::Dsp { winograd: true } if winograd_pays(params) => 3,
            Int8Simd::Dsp { .. } if dsp_row_len(params) > MAX_DSP_ROW => 0,
            Int8Simd::Dsp { .. } if dsp_block_words(params) > 0 => 2,
            Int8Simd::Dsp { .. } => 1,
            Int8Simd::Dot if sdot_row_len(params) > MAX_SDOT_ROW => 0,
            Int8Simd::Dot => 1,
        }
    }

    /// The multiple a dense convolution's row of inputs (kernel taps times input channels)
    /// is padded to by `kernel` (a [`Int8Simd::dense_kernel`] of these kernels), where its
    /// cost follows the padded length ([`dnal_kernels::int8::dsp_row_len`]): a latency table
    /// interpolates along it. `Some` for the `SMLAD` kernels that read rows (1 and 2);
    /// `None` for the portable kernel, which reads the row as it is, for Winograd's, which
    /// reads tiles, and for `SDOT`'s: it pads to 16 ([`dnal_kernels::int8::sdot_row_len`]),
    /// but measured on aarch64-qemu its cost is not a staircase in 16s (a 1x1 conv of 7
    /// inputs took 19% more than one of 1), and interpolating along the row priced
    /// MobileNetV2's pointwise layers further off (-8.8% against -3.8%).
    pub fn row_quantum(self, kernel: u8) -> Option<usize> {
        match (self, kernel) {
            (Int8Simd::Dsp { .. }, 1 | 2) => Some(4),
            _ => None,
        }
    }

    /// These kernels with 3x3 convolutions by Winograd's F(2x2, 3x3) (`on`) or directly;
    /// only the DSP kernels have the choice, so the others are returned as they are.
    pub fn with_winograd(self, on: bool) -> Int8Simd {
        match self {
            Int8Simd::Dsp { .. } => Int8Simd::Dsp { winograd: on },
            other => other,
        }
    }

    /// Whether 3x3 convolutions run by Winograd's F(2x2, 3x3) where they take it.
    pub fn winograd(self) -> bool {
        matches!(self, Int8Simd::Dsp { winograd: true })
    }
}

/// aarch64 CPUs with the dot-product instructions (Armv8.2 `dotprod`), as `-C target-cpu`
/// names them.
const DOTPROD_CPUS: &[&str] = &[
    "cortex-a55",
    "cortex-a65",
    "cortex-a75",
    "cortex-a76",
    "cortex-a77",
    "cortex-a78",
    "cortex-a510",
    "cortex-a710",
    "cortex-x1",
    "neoverse-n1",
    "neoverse-n2",
    "neoverse-v1",
];

impl Board {
    /// The CPU has the DSP extension's SIMD multiply-accumulates (`SMLAD`): every Cortex-M
    /// board dnal knows (M4, M7).
    pub fn has_dsp(&self) -> bool {
        matches!(self.harness, Harness::CortexMQemu | Harness::CortexMProbe)
    }

    /// The SIMD instructions this board's int8 firmware uses: `SMLAD` on Cortex-M4/M7 (3x3
    /// convolutions directly: [`Int8Simd::with_winograd`] trades arena for instructions),
    /// `SDOT` on aarch64 CPUs that have it (the firmware is built for `cpu`).
    pub fn int8_simd(&self) -> Int8Simd {
        if self.has_dsp() {
            Int8Simd::Dsp { winograd: false }
        } else if self.target == Some("aarch64-unknown-linux-gnu")
            && DOTPROD_CPUS.contains(&self.cpu)
        {
            Int8Simd::Dot
        } else {
            Int8Simd::None
        }
    }

    /// Bytes of flash the firmware harness and kernels take besides the weights and images
    /// (an estimate used to refuse a model before building; the linker has the last word).
    pub fn code_allowance(&self) -> u64 {
        match self.harness {
            Harness::CortexMQemu | Harness::CortexMProbe => 32 * KIB,
            Harness::Std => 4 * MIB,
        }
    }

    /// Bytes of RAM kept for the stack and the harness besides the arena.
    pub fn stack_allowance(&self) -> u64 {
        match self.harness {
            Harness::CortexMQemu | Harness::CortexMProbe => 8 * KIB,
            Harness::Std => 2 * MIB,
        }
    }

    /// Why `precision` firmware on this board cannot run its 3x3 convolutions by Winograd's
    /// F(2x2, 3x3) ([`Int8Simd::with_winograd`]), naming the boards that can; `None` where
    /// it can.
    pub fn winograd_refusal(&self, precision: dnal_export::Precision) -> Option<String> {
        let can = |b: &Board| b.int8_simd().with_winograd(true).winograd();
        let why = if precision != dnal_export::Precision::Int8 {
            format!("this is {} firmware", precision.name())
        } else if !can(self) {
            format!("{} has none", self.name)
        } else {
            return None;
        };
        let boards: Vec<&str> = BOARDS.iter().filter(|b| can(b)).map(|b| b.name).collect();
        Some(format!(
            "Winograd's 3x3 convolutions are int8 kernels for boards with the DSP extension \
             ({}), and {why}",
            boards.join(", ")
        ))
    }

    pub fn is_cortex_m(&self) -> bool {
        matches!(self.harness, Harness::CortexMQemu | Harness::CortexMProbe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_board_names_the_simd_its_int8_kernels_use() {
        let simd = |name: &str| board(name).unwrap().int8_simd();
        for name in [
            "cortex-m4-qemu",
            "cortex-m7-qemu",
            "stm32f746zg",
            "nrf52840",
        ] {
            assert_eq!(simd(name), Int8Simd::Dsp { winograd: false }, "{name}");
            assert!(simd(name).with_winograd(true).winograd(), "{name}");
        }
        // Built for the Cortex-A55, which has the dot product.
        assert_eq!(simd("aarch64-qemu"), Int8Simd::Dot);
        assert_eq!(simd("aarch64-qemu").with_winograd(true), Int8Simd::Dot);
        assert_eq!(simd("host"), Int8Simd::None);
        let a64 = board("aarch64-qemu").unwrap();
        assert!(a64.rustflags.contains(&"target-cpu=cortex-a55") && a64.cpu == "cortex-a55");
    }
}
