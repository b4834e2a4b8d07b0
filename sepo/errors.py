"""The package's error types: each names the row, field or parameter that is wrong."""


class SepoError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(SepoError, ValueError):
    """A config parameter is unknown or out of range."""


class DataError(SepoError, ValueError):
    """A dataset row or column is malformed (the message names the row index and field)."""


class TokenizerMismatchError(SepoError, ValueError):
    """Two models that must share a tokenizer do not."""
