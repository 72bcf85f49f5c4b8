"""What every command-line entry point shares: one-line errors for bad input, non-zero exits."""
from __future__ import annotations

import signal
import sys
from typing import Callable


class UserError(Exception):
    """Bad input from the user: reported as one line naming the problem and the fix, exit code 2."""


class Preempted(Exception):
    """A stop signal arrived and the run saved what it needs to resume; the CLI exits 128 + signal
    (the shell's convention for a process ended by that signal: 143 for SIGTERM)."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


# SIGTERM (schedulers' pre-emption, `docker stop`), SIGINT (Ctrl-C), SIGHUP (a closed terminal)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def catch_stop_signals(handler: Callable) -> dict:
    """Install `handler` for each stop signal this process does not ignore, and return the handlers
    it replaced (for `restore_signals`). A signal ignored at start stays ignored: `nohup` ignores
    SIGHUP, a shell ignores SIGINT for a background job, and closing the terminal must not stop them."""
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN}


def restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def run_cli(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """Run `main(argv)`; turn a UserError into `error: <message>` on stderr and exit status 2, and a
    Preempted into its message and exit status 128 + signal."""
    try:
        code = main(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Preempted as stop:
        print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
