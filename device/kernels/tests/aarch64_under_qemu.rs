//! The kernels' unit tests on an aarch64 CPU with the dot product, under qemu-aarch64: there
//! the int8 dense convolution runs `SDOT` (inline assembly) where the host's run of the same
//! tests computes it in plain Rust, so this is what holds the instruction to the portable
//! kernel's results.
//!
//! Needs the aarch64-unknown-linux-gnu rustup target, the aarch64 cross linker and
//! qemu-user, as deploying to aarch64-qemu does (scripts/setup-debian.sh installs them).

use std::path::Path;
use std::process::Command;

#[test]
fn the_unit_tests_pass_on_aarch64_with_sdot() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernels-aarch64");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Built as the aarch64-qemu board's firmware is: for the Cortex-A55 (which has the dot
    // product), static, run on QEMU's Cortex-A76 model (the same ISA for this code).
    let output = Command::new(cargo)
        .args([
            "test",
            "--release",
            "--lib",
            "--target",
            "aarch64-unknown-linux-gnu",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        )
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER",
            "qemu-aarch64 -cpu cortex-a76",
        )
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-cpu=cortex-a55 -C target-feature=+crt-static",
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the kernels' tests fail on aarch64:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The test that exists only where `SDOT` is compiled in ran, and the kernel test with it.
    for test in [
        "int8::sdot::tests::the_sdot_instruction_runs_here ... ok",
        "int8::sdot::tests::the_sdot_kernel_equals_the_portable_one ... ok",
    ] {
        assert!(stdout.contains(test), "{test} missing:\n{stdout}");
    }
}
