#!/usr/bin/env bash
# Builds libspice_shim (cargo build --release -p spice-shim) and installs what a C program such
# as QEMU needs to use it:
#
#   LIBDIR/libspice_shim.so.0.1.0 (SONAME libspice_shim.so.0; symlinks libspice_shim.so.0 and
#     libspice_shim.so), LIBDIR/libspice_shim.a           the library (shared and static), stripped
#   PREFIX/include/spice-shim.h                          the C API
#   LIBDIR/pkgconfig/spice-shim.pc                       pkg-config file (variable pipelinesdir)
#   PREFIX/share/spice-shim/pipelines/*.pipeline         the encoder pipelines: one file per codec,
#   PREFIX/share/spice-shim/pipelines/*.d/*.pipeline       or an ordered list (hardware first)
#
# Usage: scripts/install-lib.sh [--prefix DIR] [--libdir DIR] [--destdir DIR] [--artifacts DIR]
#   --prefix DIR     installation prefix (default $PREFIX, else /usr/local)
#   --libdir DIR     library directory (default $LIBDIR, else PREFIX/lib; relative: under PREFIX)
#   --destdir DIR    stage the files under DIR (for packaging); the .pc file still names PREFIX
#                    (default $DESTDIR)
#   --artifacts DIR  do not build: install libspice_shim.so and .a found in DIR
#                    (e.g. target/debug after cargo build -p spice-shim)
#
# The library finds the pipelines in PREFIX/share/spice-shim/pipelines by itself (it looks next
# to the directory it was loaded from); pipelines=DIR or $SPICE_SHIM_PIPELINES override that.
# A codec's <codec>.d/ directory replaces its single <codec>.pipeline (README, "Swapping
# encoders"): a <codec>.pipeline left there by an earlier install is renamed <codec>.pipeline.old.
# A file switched off in an installed directory (NAME.pipeline.off next to it) stays off.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="${PREFIX:-/usr/local}"
libdir="${LIBDIR:-}"
destdir="${DESTDIR:-}"
artifacts=""

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --libdir) libdir="${2:?--libdir needs a directory}"; shift 2 ;;
    --libdir=*) libdir="${1#*=}"; shift ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    --destdir=*) destdir="${1#*=}"; shift ;;
    --artifacts) artifacts="${2:?--artifacts needs a directory}"; shift 2 ;;
    --artifacts=*) artifacts="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install-lib: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

case "$prefix" in
  /*) ;;
  *) prefix="$(pwd)/$prefix" ;;
esac
prefix="${prefix%/}"
if [ -z "$libdir" ]; then
  libdir="$prefix/lib"
  pc_libdir='${exec_prefix}/lib'
else
  case "$libdir" in
    /*) ;;
    *) libdir="$prefix/$libdir" ;;
  esac
  pc_libdir="$libdir"
fi

if [ -z "$artifacts" ]; then
  cargo build --release -p spice-shim
  artifacts="${CARGO_TARGET_DIR:-target}/release"
fi
for f in libspice_shim.so libspice_shim.a; do
  if [ ! -f "$artifacts/$f" ]; then
    echo "install-lib: $artifacts/$f not found" >&2
    exit 1
  fi
done

version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)"
soname=libspice_shim.so.0
if [ -z "$version" ]; then
  echo "install-lib: cannot read the version from Cargo.toml" >&2
  exit 1
fi

d="$destdir"
pipedir="$d$prefix/share/spice-shim/pipelines"
install -d "$d$libdir/pkgconfig" "$d$prefix/include" "$pipedir"
# The real file carries the full version; the SONAME link is what programs load, the plain
# name is what the linker finds. Debug information is not installed.
rm -f "$d$libdir/libspice_shim.so" "$d$libdir/$soname" "$d$libdir/libspice_shim.so.$version"
install -m 0755 "$artifacts/libspice_shim.so" "$d$libdir/libspice_shim.so.$version"
strip --strip-unneeded "$d$libdir/libspice_shim.so.$version"
ln -s "libspice_shim.so.$version" "$d$libdir/$soname"
ln -s "$soname" "$d$libdir/libspice_shim.so"
install -m 0644 "$artifacts/libspice_shim.a" "$d$libdir/libspice_shim.a"
strip --strip-debug "$d$libdir/libspice_shim.a"
install -m 0644 spice-shim/include/spice-shim.h "$d$prefix/include/spice-shim.h"
shopt -s nullglob
for f in pipelines/*.pipeline; do
  install -m 0644 "$f" "$pipedir/"
done
for dir in pipelines/*.d; do
  [ -d "$dir" ] || continue
  name="$(basename "$dir")"
  codec="${name%.d}"
  install -d "$pipedir/$name"
  for f in "$dir"/*.pipeline; do
    base="$(basename "$f")"
    if [ -e "$pipedir/$name/$base.off" ]; then
      echo "  note: $prefix/share/spice-shim/pipelines/$name/$base stays switched off ($base.off)"
      continue
    fi
    install -m 0644 "$f" "$pipedir/$name/"
  done
  if [ -e "$pipedir/$codec.pipeline" ] && [ ! -e "pipelines/$codec.pipeline" ]; then
    mv -f "$pipedir/$codec.pipeline" "$pipedir/$codec.pipeline.old"
    echo "  note: $codec.d/ replaces $codec.pipeline, renamed $codec.pipeline.old (move local edits into $codec.d/, e.g. as 05-local.pipeline)"
  fi
done
shopt -u nullglob
# Comment lines are copied as they are; only the others are filled in.
sed -e "/^#/!s|@PREFIX@|$prefix|g" -e "/^#/!s|@LIBDIR@|$pc_libdir|g" -e "/^#/!s|@VERSION@|$version|g" \
  spice-shim/spice-shim.pc.in > "$d$libdir/pkgconfig/spice-shim.pc"
chmod 0644 "$d$libdir/pkgconfig/spice-shim.pc"

echo "install-lib: installed spice-shim $version into $d$prefix"
echo "  library:   $libdir/libspice_shim.so.$version ($soname), libspice_shim.a"
echo "  header:    $prefix/include/spice-shim.h"
echo "  pkgconfig: $libdir/pkgconfig/spice-shim.pc"
echo "  pipelines: $prefix/share/spice-shim/pipelines"
case "$libdir" in
  /usr/lib|/usr/local/lib|/usr/lib/*-linux-gnu)
    if [ -z "$destdir" ] && [ "$(id -u)" -eq 0 ] && command -v ldconfig >/dev/null; then
      ldconfig
    elif [ -z "$destdir" ]; then
      echo "  note: run ldconfig as root to refresh the linker cache"
    fi
    ;;
  *)
    echo "  note: $libdir is not a default library path: link with -Wl,-rpath,$libdir or set LD_LIBRARY_PATH"
    echo "  note: export PKG_CONFIG_PATH=$libdir/pkgconfig"
    ;;
esac
