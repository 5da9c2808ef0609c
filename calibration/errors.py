"""The one error of the calibration library: data or settings that cannot give a calibration set.

calibration/ imports nothing from quantgate's pipeline; the pipeline reports this error as an input
error (pipeline.errors.translate: exit 2, one line, no traceback)."""


class CalibrationError(ValueError):
    """Calibration data or settings cannot be used; the message names what is wrong and how to fix it."""
