"""The exception types for what a user can fix or chose: bad files, bad config values, no GPU,
Ctrl-C."""


class DigitlabError(Exception):
    """A problem with the user's input, reported as one line that names the problem and the fix.

    The command-line entry point prints ``digitlab: error: <message>`` and exits with
    ``exit_code``, without a stack trace unless ``HYDRA_FULL_ERROR=1`` is set.
    """

    exit_code = 1
    kind = "error"


class Interrupted(DigitlabError):
    """Training stopped by SIGINT (Ctrl-C) or SIGTERM; the message says how to resume.

    Exits 128 + the signal number, as a shell reports a process a signal stopped.
    """

    kind = "interrupted"

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class NonFiniteLoss(DigitlabError):
    """The training loss became NaN or infinite."""
