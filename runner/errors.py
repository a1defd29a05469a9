"""User-facing errors: what was wrong, and how to fix it."""


class ConvlabError(Exception):
    """An error caused by the user's input or environment, reported without a traceback.

    The message says what was wrong; ``fix`` (optional) says what to do about it.
    """

    def __init__(self, message: str, fix: str | None = None):
        self.fix = fix
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)
