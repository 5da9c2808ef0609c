"""The one error of the calibration library: data or settings that cannot give a calibration set.

calibration/ imports nothing from quantgate's pipeline; the pipeline reports this error as an input
error (pipeline.errors.translate: exit 2, one line, no traceback)."""


class CalibrationError(ValueError):
    """Calibration data or settings cannot be used; the message names what is wrong and how to fix it."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """What went wrong, in one line: the innermost cause's type and first line (a library's wrapper error,
    such as datasets' DatasetGenerationError, says only that something failed)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."  # cut, and say so
