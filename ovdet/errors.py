"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class OvdetError(ValueError):
    """Bad input from the user: the message names the bad value and the fix."""


class ImageLoadError(OvdetError):
    """An image that is missing, empty or not decodable."""


class ModelNotAvailableError(OvdetError):
    """A model id or folder that cannot be loaded here (e.g. a hub id with no network)."""
