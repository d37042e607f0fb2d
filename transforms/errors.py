"""Errors a command reports as one line, without a traceback: bad input (UserError), a full disk (DiskFull)."""
import errno


class UserError(Exception):
    """Bad input or configuration: the CLI prints the message and exits with status 2.

    A setting the message names is written as its name in backquotes (``give `steps`
    instead``): library callers read it so, ``maskmine`` words it as its flag (``--steps``).
    """


class SettingError(UserError, ValueError):
    """One setting's value is refused: the library says what is wrong with the value, the CLI names the flag.

    ``setting`` is the setting's name as the settings objects and the command line
    share it (``mask_threshold``: ``--mask-threshold``'s dest); ``problem`` is the rest
    of the sentence (``must be >= 0 and < 1, got 1.0``). ``str()`` reads without any
    flag (``mask threshold must be ...``), for library callers; ``maskmine`` prints
    ``argument --mask-threshold: must be ...``, as argparse words a refused value.

    Other settings the problem names are in backquotes, as in any UserError.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting.replace('_', ' ')} {problem}")
        self.setting = setting
        self.problem = problem

    def __reduce__(self):
        return (type(self), (self.setting, self.problem))


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class DiskFull(OSError):
    """A write failed for want of space (ENOSPC) or quota (EDQUOT): the file and how much of it was written.

    Raised by the atomic writers (:mod:`maskmine.transforms.atomic`), whose
    temporary file is gone by then, so a rerun resumes; the CLI prints
    ``str(exc)`` as its one line. An OSError, so ``except OSError`` still sees it.
    """

    def __init__(self, path: str, written: int | None, code: int = errno.ENOSPC) -> None:
        super().__init__(code, "disk full", str(path))
        self.path = str(path)
        self.written = written
        self.args = (self.message(),)  # what Beam and pickling carry: the line itself

    def message(self) -> str:
        what = f" ({_size(self.written)} written)" if self.written is not None else ""
        return f"disk full writing {self.path}{what}"

    def __str__(self) -> str:
        return self.message()

    def __reduce__(self):
        return (type(self), (self.path, self.written, self.errno))


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS
