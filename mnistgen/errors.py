"""The project's one error convention: a problem with the user's input is one line on stderr and exit code 2."""
import functools
import sys


class UserError(Exception):
    """A problem with the user's input (paths, flags, files): reported in one line, exit code 2."""


def run_cli(main):
    """Run `main()`, turning a UserError into a one-line message and exit code 2 (no traceback)."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapper
