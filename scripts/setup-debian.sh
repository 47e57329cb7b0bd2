#!/usr/bin/env bash
# Installs what dnal needs on a fresh Debian 12 machine that has rustup: the Fashion-MNIST
# package, lavapipe (wgpu on a CPU), QEMU for the boards, the aarch64 cross linker, Slurm and
# munge for the cluster test, and the Rust targets of the boards. Safe to run again.
set -euo pipefail

packages=(
    dataset-fashion-mnist      # /usr/share/datasets/fashion-mnist
    mesa-vulkan-drivers        # lavapipe: burn's wgpu backend on a CPU
    libvulkan1
    qemu-system-arm            # cortex-m4-qemu (mps2-an386), cortex-m7-qemu (mps2-an500)
    qemu-user                  # aarch64-qemu (qemu-aarch64)
    gcc                        # the QEMU instruction-counting plugin
    gcc-aarch64-linux-gnu      # links aarch64 firmware
    libc6-dev-arm64-cross
    fonts-dejavu-core          # the font of the plots
    slurm-wlm                  # the Slurm sweep test's one-node cluster (scripts/slurm-localhost.sh)
    munge
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

rustup target add thumbv7em-none-eabihf aarch64-unknown-linux-gnu
rustup component add rustfmt clippy
