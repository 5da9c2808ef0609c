"""quantgate's errors and exit codes: one exception tree, one table. Standard library only.

Code raises; the command line (`pipeline.cli.run_command`) is the one place that turns an exception
into one line on stderr (`quantgate <command>: error: <message>`) and its exit code. A command that
ends normally returns one of these codes for its outcome (verify: pass, fail or not verified).

Each code means one thing, whatever the command:
"""
from __future__ import annotations

import errno
from enum import IntEnum

from calibration.errors import CalibrationError


class ExitCode(IntEnum):
    OK = 0  # done: verification passed, the release is ready, the artifact is within its target
    FAILED = 1  # a check ran and failed: verification failed, release blocked, audit over target, provenance mismatch
    USAGE = 2  # refused before anything was published: bad command line, config or input, or a build that cannot meet its budget
    REFUSED = 3  # the guard refused the artifact on this CPU or runtime (it must not be loaded here)
    NOT_VERIFIED = 4  # a required check could not be made here (no such CPU, no emulator, nothing auditable): never a pass
    INTERNAL = 70  # a bug: an unexpected exception, printed with its traceback (EX_SOFTWARE)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


# The README's table, in words (tests/unit/project/test_cli.py checks that the README lists every code).
MEANING = {
    ExitCode.OK: "success: verification passed, release `ready`, artifact within its target",
    ExitCode.FAILED: "a check ran and failed: verification `fail`, release `blocked`, audit over the target, "
                     "provenance mismatch",
    ExitCode.USAGE: "refused, nothing published: bad command line, config or input file, or a build that cannot "
                    "meet its accuracy or coverage budget",
    ExitCode.REFUSED: "the guard refused the artifact on this CPU or runtime",
    ExitCode.NOT_VERIFIED: "a required check could not be made here (`not_verified`, not audited): never a pass",
    ExitCode.INTERNAL: "a bug in quantgate: the traceback is printed",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


class QuantgateError(Exception):
    """Anything quantgate refuses or reports as an error: one clear message, no traceback."""

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(QuantgateError):
    """The command line or the config is wrong (unknown option, bad override, conflicting values)."""


class InputError(QuantgateError):
    """A file or data set given to quantgate cannot be used (missing, malformed, of the wrong kind)."""


class BuildFailed(QuantgateError):
    """The build cannot give an artifact that meets its config (accuracy or coverage budget, compiler, disk)."""


class VerificationFailed(QuantgateError):
    exit_code = ExitCode.FAILED


class Refused(QuantgateError):
    exit_code = ExitCode.REFUSED


class NotVerified(QuantgateError):
    exit_code = ExitCode.NOT_VERIFIED


def error_for(code: int, message: str) -> QuantgateError:
    """The error that ends a command with a non-zero outcome code (e.g. a build whose verification failed)."""
    kind = {ExitCode.FAILED: VerificationFailed, ExitCode.REFUSED: Refused,
            ExitCode.NOT_VERIFIED: NotVerified}.get(code, QuantgateError)
    return kind(message)


# What to do about a file-system error on a path the user chose (an output folder, an input file).
OS_ERROR_FIXES = {
    errno.EACCES: "check its permissions or choose a folder you may write to",
    errno.EPERM: "check its permissions or choose a folder you may write to",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOSPC: "the disk is full: free space and run again",
    errno.EDQUOT: "the disk quota is used up: free space and run again",
    errno.EFBIG: "the file is over the file size limit (ulimit -f): raise it and run again",
    errno.EISDIR: "it is a folder where a file is needed: give a file",
    errno.ENOTDIR: "part of the path is a file where a folder is needed: give a folder",
    errno.EEXIST: "a file is in the way where a folder is needed: give another path",
    errno.ENAMETOOLONG: "the path is too long: use a shorter one",
    errno.ENOENT: "it does not exist: check the path",
}


def translate(error: BaseException) -> QuantgateError | None:
    """A library's or the file system's error that is really about the user's input or machine, as
    quantgate's (one line, the exit code of its kind); None for anything else (a bug)."""
    if isinstance(error, CalibrationError):
        return InputError(str(error))
    if isinstance(error, OSError) and error.errno in OS_ERROR_FIXES:
        where = error.filename or "a file"
        also = f" (and {error.filename2})" if error.filename2 else ""
        return InputError(f"cannot use {where}{also}: {error.strerror}; {OS_ERROR_FIXES[error.errno]}")
    return None
