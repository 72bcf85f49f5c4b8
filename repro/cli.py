"""What every command-line entry point shares: one-line errors for bad input, non-zero exits."""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """Bad input from the user: reported as one line naming the problem and the fix, exit code 2."""


def run_cli(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """Run `main(argv)`; turn a UserError into `error: <message>` on stderr and exit status 2."""
    try:
        code = main(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
