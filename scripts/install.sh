#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian/Ubuntu machine.
#   bash scripts/install.sh        # runtime: ffmpeg + the package
#   bash scripts/install.sh dev    # also the test, lint and cluster tools
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg decodes what libsndfile cannot; libchromaprint1 fingerprints songs for the
# near-duplicate check (ffmpeg's libavformat already depends on it; named so it stays). The
# tests also open the spot-check report and the dataset card in Debian's Chromium
# (Playwright drives it; no browser download).
# gcc builds the quality measures' C loops (native/quality_kernels.c).
packages="ffmpeg libchromaprint1 gcc"
[ "${1:-}" = "dev" ] && packages="ffmpeg libchromaprint1 gcc chromium"
missing=""
for package in $packages; do
  dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

# Every Python package at the exact version in requirements/lock.txt, so a fresh machine
# installs what CI tested (requirements/refresh-lock.sh regenerates the lock). The build
# backend comes from the lock too, hence no build isolation.
extras=""
[ "${1:-}" = "dev" ] && extras="[dev]"
lock="requirements/lock.txt"
pip_install=(python -m pip install --quiet --disable-pip-version-check --constraint "$lock")
"${pip_install[@]}" setuptools
# The C loops are a package of their own, installed (not editable) like a dependency.
"${pip_install[@]}" --no-build-isolation ./native
"${pip_install[@]}" --no-build-isolation -e ".${extras}"
