"""What every command-line entry point shares: errors become one line and a non-zero exit."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable


def main_guard(main: Callable[[], int]) -> int:
    """Run `main`; on any error print `error: ...` (one line) to stderr and return 1.

    Set OFFRL_DEBUG=1 to see the full traceback.
    """
    try:
        return main()
    except KeyboardInterrupt:
        print("error: interrupted; the last checkpoint is kept (continue with --resume RUN_DIR)", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place that turns any failure into an exit status
        if os.environ.get("OFFRL_DEBUG"):
            traceback.print_exc()
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
