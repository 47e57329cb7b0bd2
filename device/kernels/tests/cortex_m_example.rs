//! The README's promise: dnal-kernels links into a firmware of one's own. Builds
//! `examples/cortex-m-minimal` (a workspace of its own) for thumbv7em-none-eabihf and, where
//! QEMU is installed, runs it on mps2-an386.
//!
//! Needs the thumbv7em-none-eabihf rustup target and the example's few dependencies
//! (cortex-m-rt and friends, which generated firmware uses too), fetched from crates.io
//! when not yet in cargo's cache.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_cortex_m_example_builds_and_runs() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cortex-m-minimal");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cortex-m-minimal");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The example's .cargo/config.toml sets the target and the linker script; flags from
    // this test's environment would replace them.
    let output = Command::new(cargo)
        .current_dir(&example)
        .args(["build", "--release", "--locked"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the example does not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let elf = target_dir.join("thumbv7em-none-eabihf/release/cortex-m-minimal");
    assert!(elf.exists(), "{}", elf.display());

    let Ok(mut qemu) = Command::new("qemu-system-arm")
        .args(["-cpu", "cortex-m4", "-machine", "mps2-an386", "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(&elf)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("qemu-system-arm not found: the example was built, not run");
        return;
    };
    let start = Instant::now();
    while qemu.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = qemu.kill();
            panic!("the example did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = qemu.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}");
    // The image is a vertical bar: class 0.
    assert!(
        stdout.contains("dnal-kernels example: logits [") && stdout.contains("class 0"),
        "{stdout}"
    );
}
