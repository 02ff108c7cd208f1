#!/usr/bin/env bash
# Installs what building, running and testing spice-dmabuf needs on Debian 12 (bookworm):
# GStreamer 1.22 development files and plugins (x264, vpx, jpeg, x265, libav), the spice-gtk
# clients (spicy, spicy-screenshot, remote-viewer), Xvfb and screenshot tools, gcc, valgrind,
# and for `spice-shim qemu` and its tests: QEMU, a private D-Bus daemon, a Debian kernel and
# busybox for the test guest's initramfs.
# Skips apt entirely when everything is already there.
set -euo pipefail

packages=(
  pkg-config gcc libc6-dev valgrind
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  spice-client-gtk virt-viewer gir1.2-spiceclientglib-2.0
  xvfb x11-apps x11-utils imagemagick xdotool
  qemu-system-x86 dbus-daemon linux-image-amd64 busybox-static cpio
  openssl
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install Rust 1.92 or newer (https://rustup.rs)" >&2
  exit 1
fi
echo "install-deps: all dependencies present"
