#!/usr/bin/env bash
# Build the Artveil onedir bundle for Linux: installer/build.sh [cpu|cuda]   (default: cpu)
#
# The variant is the torch wheel in the build venv (build/installer/<variant>/venv, separate from .venv):
#   cpu   torch==2.13.0 with the PyTorch CPU index as an extra index (its 2.13.0+cpu wins over PyPI's)
#   cuda  torch==2.13.0 from PyPI, which on Linux is the CUDA build
# ARTVEIL_TORCH_SPEC replaces those pip arguments, e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126".
# The result is dist/artveil-linux-<variant>/ (artveil-gui, artveil, _internal/); the script ends by
# running the bundle's own self-test.
set -euo pipefail

VARIANT="${1:-cpu}"
case "$VARIANT" in
    cpu) DEFAULT_SPEC="torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu" ;;
    cuda) DEFAULT_SPEC="torch==2.13.0" ;;
    *) echo "usage: installer/build.sh [cpu|cuda]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/build/installer/$VARIANT"
VENV="$WORK/venv"
DIST="$ROOT/dist/artveil-linux-$VARIANT"
PY="$VENV/bin/python"
started=$SECONDS

step() { printf 'build: %s\n' "$*" >&2; }

mkdir -p "$WORK"
if [[ ! -x "$PY" ]]; then
    step "creating the build venv ($VENV)"
    "${ARTVEIL_PYTHON:-python3}" -m venv "$VENV"
fi
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    read -r -a TORCH_ARGS <<<"${ARTVEIL_TORCH_SPEC:-$DEFAULT_SPEC}"
    step "installing ${TORCH_ARGS[*]}"
    "$PY" -m pip install -q --disable-pip-version-check "${TORCH_ARGS[@]}"
fi
# The wheel decides the variant; refuse to label a CUDA bundle "cpu" or the other way round.
cuda="$("$PY" -c 'import torch; print(torch.version.cuda or "none")')"
if [[ "$VARIANT" == cpu && "$cuda" != none ]] || [[ "$VARIANT" == cuda && "$cuda" == none ]]; then
    echo "build: the build venv's torch (CUDA: $cuda) does not match the '$VARIANT' variant; delete $VENV and run again." >&2
    exit 1
fi
step "installing Artveil and PyInstaller into the build venv"
"$PY" -m pip install -q --disable-pip-version-check -e "$ROOT[installer]"

step "running PyInstaller (several minutes)"
"$PY" -m PyInstaller --noconfirm --log-level WARN \
    --workpath "$WORK/pyinstaller" --distpath "$WORK/dist" "$ROOT/installer/artveil.spec"
rm -rf "$DIST"
mkdir -p "$(dirname "$DIST")"
mv "$WORK/dist/artveil" "$DIST"

step "self-test of the bundle"
QT_QPA_PLATFORM=offscreen "$DIST/artveil-gui" --self-test
step "done in $(( SECONDS - started )) s: $DIST ($(du -sh "$DIST" | cut -f1); torch $("$PY" -c 'import torch; print(torch.__version__)'))"
