"""The errors curate-loop raises, in one tree.

    CurateLoopError                 every error we raise on purpose; the CLI prints it and exits 1
    ├── SetupError                  something the tool needs is not installed or not configured
    │   ├── MongoDBError            FiftyOne's MongoDB is missing or does not start
    │   └── LabelStudioNotInstalled no Label Studio server executable to start
    ├── LabelStudioServerError      a local Label Studio server did not start or stopped
    ├── LabelStudioAuthError        a Label Studio server is unreachable or rejects the API key
    ├── EmbeddingModelError         an embedding model cannot be created or its weights loaded
    └── InvalidInputError           a user-supplied value is wrong (says which and what is allowed)

Every message says what happened, with the values involved, and what to do about it.
Third-party errors are translated where they are caught, with ``raise ... from exc``.
"""


class CurateLoopError(Exception):
    """Base class for every error curate-loop raises deliberately."""


class SetupError(CurateLoopError):
    """A dependency of curate-loop is missing or misconfigured."""


class MongoDBError(SetupError):
    """FiftyOne's MongoDB could not be found or started."""


class LabelStudioNotInstalled(SetupError):
    """No Label Studio server executable could be found."""


class LabelStudioServerError(CurateLoopError):
    """A local Label Studio server failed to start, or a requested port is unusable."""


class LabelStudioAuthError(CurateLoopError):
    """A Label Studio server could not be reached or did not accept the API key."""


class EmbeddingModelError(CurateLoopError):
    """An open_clip model could not be created or its weights could not be had."""


class InvalidInputError(CurateLoopError, ValueError):
    """A value supplied by the user is invalid."""
