"""The one exception type for mistakes a user can fix: bad files, bad config values, no GPU."""


class DigitlabError(Exception):
    """A problem with the user's input, reported as one line that names the problem and the fix.

    The command-line entry point prints ``digitlab: error: <message>`` and exits non-zero,
    without a stack trace unless ``HYDRA_FULL_ERROR=1`` is set.
    """
