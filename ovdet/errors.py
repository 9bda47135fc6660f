"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class OvdetError(ValueError):
    """Bad input from the user: the message names the bad value and the fix."""


class ImageLoadError(OvdetError):
    """An image that is missing, empty or not decodable."""


class ModelNotAvailableError(OvdetError):
    """A model id or folder that cannot be loaded here (e.g. a hub id with no network)."""


class CheckpointError(OvdetError):
    """A training checkpoint that cannot be loaded safely (corrupt, or holding pickled code)."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the run stops and the last good checkpoint stays."""


class OvdetWarning(UserWarning):
    """Input was adapted and the run goes on (first frame of an animation, a query cut to fit)."""
