"""The guard's exceptions, defined once, and the exit codes of `python -m pipeline.guard` / `quantgate_guard`.

    GuardError                      every error the guard raises on purpose
      ArtifactRefused               this host must not run the artifact (exit 3); the message says why
        SignatureCheckUnavailable   a public key was given, but model-signing is not installed
        UnsafeModelError            an ONNX file points outside its folder for external data
      StampError                    the artifact carries no readable quantgate stamp (exit 3)
        UnreadableArtifact          no such file, or not an ONNX model / .pt2 zip at all (exit 2)

Every child runner (verify_child, aoti_child) and the CLI catch these classes; there is no second copy
of them anywhere (a module run as `__main__` defining its own would make `except` clauses miss).
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2  # bad arguments, or a file that is not an artifact at all
EXIT_REFUSED = 3  # the exit code of the guard command and of verification children it refused


class GuardError(Exception):
    """An error the guard raises on purpose: one clear message, never a traceback at the command line."""


class ArtifactRefused(GuardError, RuntimeError):
    """This host must not run the artifact; the message says why and what to do."""


class SignatureCheckUnavailable(ArtifactRefused):
    """A public key was given, but the package that checks signatures (model-signing) is not installed."""


class UnsafeModelError(ArtifactRefused, ValueError):
    """The model file must not be opened (external data outside its folder); the message says why."""


class StampError(GuardError, ValueError):
    """The artifact carries no readable quantgate stamp."""


class UnreadableArtifact(StampError):
    """The path is no artifact at all: missing, unreadable, not an ONNX model or not a .pt2 zip."""
