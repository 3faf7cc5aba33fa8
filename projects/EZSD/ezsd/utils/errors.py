"""User-facing errors: one clear line naming the file, key or value at fault, and a non-zero
exit."""

import errno
import functools
import sys

__all__ = ["UserInputError", "exit_on_user_error"]


class UserInputError(ValueError):
    """Bad input from the user (a missing file, a wrong name, an inconsistent file pair).

    Command-line tools print its message as a single line instead of a traceback.
    """


# OS errors about where the user asked us to write, not about our code: one line, exit 1.
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def exit_on_user_error(main):
    """Decorate a tool's `main`: a UserInputError becomes `error: <message>` on stderr, exit 2;
    an OSError that names a file it cannot write (permission denied, read-only file system, disk
    full) becomes `error: <file>: <reason>`, exit 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserInputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:
            if e.errno not in _ENVIRONMENT_ERRNOS or not e.filename:
                raise
            print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
            sys.exit(1)

    return wrapper
