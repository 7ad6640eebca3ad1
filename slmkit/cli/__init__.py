"""`slm`: the command line. Thin: parse flags, call the Python API, render with rich.

One module per command group registers its commands on `app` (slmkit/cli/app.py) when imported.
"""

from __future__ import annotations

import os
import sys

from slmkit.cli import chat, models, serve, tasks, tools  # noqa: F401  - register their commands
from slmkit.cli.app import app
from slmkit.errors import SlmkitError


def main() -> None:
    """Entry point: our errors become one clear line and exit 1, never a traceback.

    Usage errors (unknown flag, a value of the wrong type) are typer's own, with exit code 2.
    """
    try:
        app(prog_name="slm")
    except SlmkitError as exc:
        sys.stderr.write(f"Error: {exc.message}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("\nInterrupted.\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - a bug: still one line for the user, the trace on request
        if os.environ.get("SLMKIT_DEBUG"):
            raise
        sys.stderr.write(f"Error: internal error: {type(exc).__name__}: {exc}\n"
                         "This is a bug in slmkit; run again with SLMKIT_DEBUG=1 to see where it happened.\n")
        sys.exit(1)
