"""Project exceptions. The CLI catches :class:`HeadpuppetError` at its edge and prints the message
as one line, so anything a user can fix is raised as one of these with a message saying what to do."""


class HeadpuppetError(Exception):
    """A user-facing error: its message is one line that says what went wrong and what to do."""


class PluginError(HeadpuppetError):
    """A plugin is missing, unavailable, clashes with another, or failed to load."""


class ConfigError(HeadpuppetError):
    """A configuration file or override is invalid (unknown key, wrong type)."""


class WeightsMissingError(HeadpuppetError):
    """Pretrained weights a component needs are not present; the message names the fixing command."""


class MediaError(HeadpuppetError):
    """An input image or video cannot be read, or an output cannot be written."""


class NoFaceError(HeadpuppetError):
    """No face was found where one is required."""


class CheckpointError(HeadpuppetError):
    """A checkpoint is missing, broken, or from an incompatible version."""


class Interrupted(HeadpuppetError):
    """A run stopped early by a signal after saving its state; the CLI exits with ``exit_code``
    (128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM), so scripts can tell it from a finish."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
