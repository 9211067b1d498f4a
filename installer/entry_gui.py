"""Frozen entry point of `artveil-gui` (the window, and `--self-test`)."""

import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
