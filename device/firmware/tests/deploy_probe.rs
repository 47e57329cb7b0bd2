//! A real board (STM32F746ZG through probe-rs, defmt over RTT) must build here; running it
//! without probe-rs or a probe says so.

use dnal_firmware::deploy::{DeployError, DeployRequest, deploy};
use dnal_firmware::synth::{random_export, tiny_cnn_arch};

#[test]
fn stm32f746zg_firmware_builds_and_running_needs_a_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let export = random_export(tiny_cnn_arch("tiny-f746"), 5).unwrap();
    let export_dir = tmp.path().join("export");
    export.write(&export_dir).unwrap();
    let out = tmp.path().join("fw");
    let report = deploy(&DeployRequest::new(&export_dir, "stm32f746zg", &out)).unwrap();
    assert_eq!(report.target, "thumbv7em-none-eabihf");
    assert!(report.flash_bytes > report.weights_bytes && report.flash_bytes < 64 * 1024);
    assert!(report.ram_bytes >= report.arena_bytes);
    assert!(report.cost.is_none() && report.parity.is_none());
    assert!(out.join("deploy.json").exists());
    let config = std::fs::read_to_string(out.join(".cargo/config.toml")).unwrap();
    assert!(
        config.contains("probe-rs run --chip STM32F746ZGTx"),
        "{config}"
    );
    assert!(config.contains("-Tdefmt.x"), "{config}");
    let memory = std::fs::read_to_string(out.join("memory.x")).unwrap();
    assert!(memory.contains("ORIGIN = 0x08000000"), "{memory}");

    if dnal_firmware::deploy::which("probe-rs").is_none() {
        let mut req = DeployRequest::new(&export_dir, "stm32f746zg", &out);
        req.run = true;
        let e = deploy(&req).unwrap_err();
        assert!(matches!(e, DeployError::ProbeNeeded { .. }), "{e}");
        assert!(e.to_string().contains("needs probe-rs"), "{e}");
        assert!(out.join("deploy.json").exists());
    }
}
