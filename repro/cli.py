"""What every command-line entry point shares: one-line errors for bad input, non-zero exits."""
from __future__ import annotations

import signal
import sys
import threading
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


class StopSignals:
    """The stop signals received inside `with stop:` (the trainer checkpoints at the end of its
    step; the experiment runner passes the signal on and starts nothing new). `signum` is the first
    signal; `count` how many, where a repeated SIGTERM counts once: SLURM sends SIGTERM to every
    process of a job step, and again within a second at a pre-emption (docs/slurm.md), which must
    still wait for the checkpoint, while Ctrl-C twice means now. A signal the process was started
    ignoring stays ignored (`nohup` ignores SIGHUP, a shell SIGINT for a background job). Nested
    `with` blocks share the handlers; outside the main thread it is a no-op."""

    def __init__(self):
        self.signum: int | None = None
        self.count = 0
        self._previous: dict = {}
        self._depth = 0

    def _handle(self, signum, frame) -> None:
        self.count += self.count == 0 or signum != signal.SIGTERM
        self.signum = self.signum or signum

    def __enter__(self):
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS
                              if signal.getsignal(sig) is not signal.SIG_IGN}
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            restore_signals(self._previous)
            self._previous, self.signum, self.count = {}, None, 0   # the next block starts afresh


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
