//! A deploy from Rust: an export onto a board, built, run and checked against the export's
//! own reference forward, as `dnal deploy` does without the host's burn.
//!
//! ```sh
//! # an export of your own (say the one of `cargo run -p dnal --example search`), on QEMU:
//! cargo run --release -p dnal-firmware --example deploy -- runs/example cortex-m4-qemu
//! # no export at hand: a small random network, natively on this machine
//! cargo run --release -p dnal-firmware --example deploy
//! ```
//!
//! The firmware crate lands in `EXPORT/firmware-BOARD` (the random network's export is
//! written to the system's temporary folder, `dnal-example-tiny-cnn`): a no_std crate with the kernels vendored, which builds anywhere with cargo and the
//! board's target.

use std::path::PathBuf;

use dnal_firmware::{DeployRequest, board, deploy, synth};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let export_arg = args.next();
    let board_name = args.next().unwrap_or_else(|| "host".into());
    if board::board(&board_name).is_none() {
        return Err(format!(
            "unknown board {board_name:?}; boards: {}",
            board::board_names().join(", ")
        )
        .into());
    }

    // The export: the folder given, or a random network written to the temporary folder.
    let export_dir = match export_arg {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = std::env::temp_dir().join("dnal-example-tiny-cnn");
            let export = synth::random_export(synth::tiny_cnn_arch("tiny-cnn"), 7)?;
            export.write(&dir)?;
            dir
        }
    };

    let firmware_dir = export_dir.join(format!("firmware-{board_name}"));
    let mut request = DeployRequest::new(&export_dir, &board_name, &firmware_dir);
    // Run it too (not only build); with no test images given, a few deterministic random
    // images are embedded and the firmware's logits are compared with the export's
    // reference forward. `request.images` and `request.reference_logits` take real ones.
    request.run = true;
    let report = deploy(&request)?;

    println!(
        "{} on {} ({}): flash {} of {} bytes, RAM {} of {} bytes",
        report.model,
        report.board,
        report.cpu,
        report.flash_bytes,
        report.flash_budget_bytes,
        report.ram_bytes,
        report.ram_budget_bytes
    );
    if let Some(cost) = &report.cost {
        println!(
            "cost: {:.0} {} per inference ({:.2} per MAC)",
            cost.per_inference, cost.unit, cost.per_mac
        );
    }
    if let Some(parity) = &report.parity {
        println!(
            "parity with {}: largest difference {:.2e} of the logit scale, top-1 agreement {:.0}% over {} images",
            parity.reference,
            parity.max_rel_diff,
            100.0 * parity.top1_agreement,
            parity.images
        );
    }
    println!("firmware crate and deploy.json: {}", firmware_dir.display());
    Ok(())
}
