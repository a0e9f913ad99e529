"""The project's one error convention: a problem with the user's input is one line on stderr and exit code 2.

An interruption, by Ctrl-C (SIGINT) or by `kill` (SIGTERM, as a job scheduler or a closing terminal sends it), is
one line too, "interrupted" and what it interrupted (a training says how to resume), with exit code 130. Warnings
(torch's, about odd files) are held back until the command ends: shown after a success or a traceback, dropped
when the command ends in its one line.
"""
import functools
import signal
import sys
import threading
import warnings


class UserError(Exception):
    """A problem with the user's input (paths, flags, files): reported in one line, exit code 2."""


class Interrupted(KeyboardInterrupt):
    """An interruption that knows what to say about it, e.g. a training: the step it reached and how to resume."""


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_cli(main):
    """Run `main()`, turning a UserError into a one-line message and exit code 2 (no traceback), and SIGINT or
    SIGTERM into the one line "interrupted" and exit code 130."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        in_main_thread = threading.current_thread() is threading.main_thread()  # where handlers can be set
        previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
        held = []
        try:
            try:
                with warnings.catch_warnings(record=True) as held:
                    result = main(*args, **kwargs)
            except (UserError, KeyboardInterrupt, SystemExit):  # one line (argparse's errors exit): no warnings
                raise
            except BaseException:
                _show(held)
                raise
            _show(held)
            return result
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as err:
            print(f"interrupted: {err}" if str(err) else "interrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return wrapper


def _show(held):
    for w in held:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
