#!/usr/bin/env bash
# Runs the whole test suite for riscv64 or aarch64 Linux under QEMU user-mode emulation,
# in debug and release. Installs the cross toolchain and QEMU if they are missing.
#
#   scripts/test-cross.sh riscv64
#   scripts/test-cross.sh aarch64
#
# The linker and runner for each target are set in .cargo/config.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    riscv64) target=riscv64gc-unknown-linux-gnu; gcc=gcc-riscv64-linux-gnu; libc=libc6-dev-riscv64-cross; qemu=qemu-riscv64-static ;;
    aarch64) target=aarch64-unknown-linux-gnu; gcc=gcc-aarch64-linux-gnu; libc=libc6-dev-arm64-cross; qemu=qemu-aarch64-static ;;
    *) echo "usage: $0 riscv64|aarch64" >&2; exit 2 ;;
esac

if ! command -v "${gcc#gcc-}-gcc" >/dev/null || ! command -v "$qemu" >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$gcc" "$libc" qemu-user-static >/dev/null
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

echo "== cargo test --target $target (debug)"
cargo test --target "$target"
echo "== cargo test --target $target --release"
cargo test --target "$target" --release
