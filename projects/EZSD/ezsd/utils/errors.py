"""User-facing errors: one clear line naming the file, key or value at fault, and a non-zero exit."""
import functools
import sys

__all__ = ["UserInputError", "exit_on_user_error"]


class UserInputError(ValueError):
    """Bad input from the user (a missing file, a wrong name, an inconsistent file pair).

    Command-line tools print its message as a single line instead of a traceback.
    """


def exit_on_user_error(main):
    """Decorate a tool's `main`: a UserInputError becomes `error: <message>` on stderr, exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserInputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
