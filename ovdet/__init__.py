"""ovdet: open-vocabulary object detection on CLIP. Give an image and any text, get boxes."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `import ovdet` (and `ovdet --help`) stays fast: torch loads on first use.
    if name == "Detector":
        from ovdet.models.detector import Detector

        return Detector
    raise AttributeError(name)
