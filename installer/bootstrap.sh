#!/usr/bin/env bash
# Make the repository's .venv ready to run Artveil and its tests; shared by ./run-artveil and ./run-tests.
#
# Idempotent and quiet: a no-op (one Python start-up) when everything is in place, one status line on
# stderr while it works, and on failure the tail of the pip log plus what to do. Environment:
#   ARTVEIL_PYTHON       interpreter for a new .venv (default: the first python3 / python3.1x that is 3.10+)
#   ARTVEIL_TORCH_SPEC   pip arguments for torch when it is missing (default: torch==2.13.0), e.g.
#                        "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
LOG="$VENV/artveil-install.log"
STAMP="$VENV/artveil-install.stamp"
DEFAULT_TORCH_SPEC="torch==2.13.0"

say() { printf 'artveil: %s\n' "$*" >&2; }

fail() {
    # $1: what went wrong, $2: what to do about it.
    say "set-up failed: $1"
    if [[ -s "$LOG" ]]; then
        printf '%s\n' "----- last lines of $LOG -----" >&2
        tail -n 15 "$LOG" >&2
        printf '%s\n' "-----" >&2
    fi
    say "what to do: $2"
    exit 1
}

is_python310() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1
}

find_python() {
    local candidate
    if [[ -n "${ARTVEIL_PYTHON:-}" ]]; then
        is_python310 "$ARTVEIL_PYTHON" || return 1
        printf '%s\n' "$ARTVEIL_PYTHON"
        return 0
    fi
    # The default python3 first (it is the one the user chose); then any versioned 3.10+ on PATH.
    for candidate in python3 python python3.13 python3.12 python3.11 python3.10; do
        if command -v "$candidate" >/dev/null 2>&1 && is_python310 "$candidate"; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

venv_python() {
    if [[ -x "$VENV/bin/python" ]]; then
        printf '%s\n' "$VENV/bin/python"
    else
        printf '%s\n' "$VENV/Scripts/python.exe"  # Git Bash on Windows
    fi
}

# 1. The virtual environment.
if [[ ! -d "$VENV" ]]; then
    PYTHON="$(find_python)" || fail "no Python 3.10 or newer found (${ARTVEIL_PYTHON:+ARTVEIL_PYTHON=$ARTVEIL_PYTHON, }python3, python3.1x on PATH)." \
        "install Python 3.10+ (e.g. 'sudo apt install python3 python3-venv'), or point ARTVEIL_PYTHON at one."
    say "first run: creating $(basename "$VENV") with $("$PYTHON" -c 'import sys; print("Python %d.%d.%d" % sys.version_info[:3])') ..."
    venv_err="$(mktemp)"
    "$PYTHON" -m venv "$VENV" >/dev/null 2>"$venv_err" || {
        cat "$venv_err" >&2
        rm -rf "$VENV" "$venv_err"
        fail "could not create a virtual environment with $PYTHON." \
            "install the venv module (Debian/Ubuntu: 'sudo apt install python3-venv'), or set ARTVEIL_PYTHON to another Python 3.10+."
    }
    rm -f "$venv_err"
fi
PY="$(venv_python)"
is_python310 "$PY" || fail "$VENV does not hold a working Python 3.10+ (moved, or its Python was removed)." \
        "delete it ('rm -rf $(basename "$VENV")') and run this command again; it is rebuilt from scratch."

# 2. What is missing? One interpreter start: torch importable (without importing it, which is slow)
#    and the project installed from the current pyproject.toml (its hash is in the stamp file).
read -r HAVE_TORCH WANT_HASH HAVE_HASH < <("$PY" - "$ROOT/pyproject.toml" "$STAMP" <<'EOF'
import hashlib, importlib.util, pathlib, sys
want = hashlib.sha256(pathlib.Path(sys.argv[1]).read_bytes()).hexdigest()
stamp = pathlib.Path(sys.argv[2])
have = stamp.read_text().strip() if stamp.is_file() else "none"
print(int(importlib.util.find_spec("torch") is not None), want, have)
EOF
) || fail "could not inspect $VENV." "delete it ('rm -rf $(basename "$VENV")') and run this command again."

if [[ "$HAVE_TORCH" == 1 && "$WANT_HASH" == "$HAVE_HASH" ]]; then
    exit 0
fi

pip_quiet() {
    "$PY" -m pip install --disable-pip-version-check --no-input "$@" >>"$LOG" 2>&1
}

: >"$LOG"

# 3. torch before the project: a bare "torch" requirement would pull whatever build PyPI has.
if [[ "$HAVE_TORCH" != 1 ]]; then
    read -r -a TORCH_ARGS <<<"${ARTVEIL_TORCH_SPEC:-$DEFAULT_TORCH_SPEC}"
    say "installing PyTorch (${TORCH_ARGS[*]}); this can take several minutes ..."
    pip_quiet "${TORCH_ARGS[@]}" || fail "pip could not install PyTorch (${TORCH_ARGS[*]})." \
        "check the network and free disk space; for a specific CUDA build set ARTVEIL_TORCH_SPEC, e.g. ARTVEIL_TORCH_SPEC=\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128\" (see README)."
fi

# 4. The project itself, editable, with the test tools; only again when pyproject.toml changes.
say "installing Artveil and its dependencies into $(basename "$VENV") ..."
pip_quiet -e "$ROOT[test]" || fail "pip could not install Artveil's dependencies." \
    "read the log above ($LOG); fix the network or disk problem it names and run this command again."
printf '%s\n' "$WANT_HASH" >"$STAMP"
say "ready in $((SECONDS / 60)) min $((SECONDS % 60)) s ($("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA " + torch.version.cuda if torch.version.cuda else "CPU-only")'))."
