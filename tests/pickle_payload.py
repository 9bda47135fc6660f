"""A pickle that runs code when loaded: what a malicious weights file would do, made harmless (it writes a marker)."""

from pathlib import Path

MARKER = "unpickled.txt"


def _touch(path: str) -> None:
    Path(path).write_text("code from a weights file ran")


class Payload:
    """Unpickling this calls `_touch`: what a malicious pickle would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _touch, (self.marker,)
