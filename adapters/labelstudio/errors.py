"""Errors of the Label Studio sync, under curate-loop's tree.

    CurateLoopError
    ├── LabelStudioAuthError          (curate_loop.errors) the API key is malformed, expired or rejected
    │   └── LabelStudioKeyMissing     no key at all (environment, argument or key file): show recorded state
    └── LabelStudioSyncError          a push or pull could not finish; the message says what to re-run
        ├── LabelStudioUnreachable    no answer (connection refused, timeout): nothing half-applied
        ├── LabelStudioAPIError       the server answered with an error status
        ├── BatchBusyError            another push of the same batch holds its lock: nothing was pushed
        ├── MediaNotServedError       the server cannot show the images (not under its document root)
        └── AnnotationConflictError   annotators disagree under the "agreement" policy (reported, not raised,
                                      by pull; raised only when asked to fail on conflicts)

The API key never appears in these messages: they are built from the URL, the status and the server's reply.
"""

from __future__ import annotations

from curate_loop.errors import CurateLoopError, LabelStudioAuthError

__all__ = ["LabelStudioAuthError", "LabelStudioKeyMissing", "LabelStudioSyncError", "BatchBusyError", "LabelStudioUnreachable", "LabelStudioAPIError",
           "MediaNotServedError", "AnnotationConflictError"]


class LabelStudioKeyMissing(LabelStudioAuthError):
    """No API key was given, set or recorded: commands that only read state fall back to what was recorded."""


class LabelStudioSyncError(CurateLoopError):
    """A push to or pull from Label Studio could not finish."""


class LabelStudioUnreachable(LabelStudioSyncError):
    """The server did not answer (connection refused, reset or timed out)."""


class LabelStudioAPIError(LabelStudioSyncError):
    """The server answered with an error status."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class BatchBusyError(LabelStudioSyncError):
    """Another push of the same batch (same dataset) is running; this one pushed nothing."""


class MediaNotServedError(LabelStudioSyncError):
    """The images are neither under the server's local-files root nor cloud URLs."""


class AnnotationConflictError(LabelStudioSyncError):
    """Annotators of a task disagree and the policy requires agreement."""
