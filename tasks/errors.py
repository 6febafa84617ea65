"""The one exception type that means "the user asked for something we cannot do"."""


class LLLError(Exception):
    """Bad input or an unusable environment.

    The command line prints ``error: <message>`` on one line and exits with code 2, so the
    message must name the problem *and* the fix.
    """
