"""`Detector.detect` checks its numeric options and images at the boundary, and says when its head is untrained."""

import warnings

import numpy as np
import pytest
from PIL import Image

from ovdet.errors import ImageLoadError, OvdetError, OvdetWarning
from ovdet.models.detection import UNTRAINED_BANNER
from ovdet.models.detector import Detector

pytestmark = pytest.mark.usefixtures("one_thread")
IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def detector(perturbed_detector):
    return perturbed_detector


@pytest.mark.parametrize("size", [(0, 0), (0, 10), (10, 0)])
def test_empty_pil_image_is_one_clear_error(detector, size):
    with pytest.raises(ImageLoadError, match=rf"PIL image is empty \({size[0]}x{size[1]} pixels\)"):
        detector.detect(Image.new("RGB", size), ["star"])


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("max_detections", 2.5, r"max_detections must be a positive integer, got 2.5"),
        ("max_detections", 0, r"max_detections must be a positive integer, got 0"),
        ("max_detections", -1, r"max_detections must be a positive integer, got -1"),
        ("max_detections", True, r"max_detections must be a positive integer, got True"),
        ("batch_size", 2.0, r"batch_size must be a positive integer, got 2.0"),
        ("batch_size", 0, r"batch_size must be a positive integer, got 0"),
        ("threshold", float("nan"), r"threshold must be a number in \[0, 1\].*got nan"),
        ("threshold", 1.01, r"threshold must be a number in \[0, 1\].*got 1.01"),
        ("threshold", -0.5, r"threshold must be .*got -0.5"),
        ("threshold", False, r"threshold must be .*got False"),
        ("nms", 0.0, r"nms must be an IoU in \(0, 1\].*got 0.0"),
        ("nms", 1.5, r"nms must be an IoU in \(0, 1\].*got 1.5"),
        ("nms", float("nan"), r"nms must be .*got nan"),
    ],
)
@pytest.mark.parametrize("postprocess", ["ovdet", "hf"])
def test_bad_numeric_options_are_one_clear_error(detector, option, value, message, postprocess):
    with pytest.raises(OvdetError, match=message) as err:
        detector.detect(IMAGE, ["star"], postprocess=postprocess, **{option: value})
    assert "\n" not in str(err.value)


def test_options_at_the_boundaries_are_accepted(detector):
    everything = detector.detect(IMAGE, ["star", "ring"], threshold=0, nms=1, max_detections=1000, batch_size=1)[0]
    # threshold 0 keeps every pair of a region inside the image (the 8x8 grid's bottom rows are padding), nms 1 drops none
    assert 64 < len(everything) <= 2 * 64
    assert len(detector.detect(IMAGE, ["star"], threshold=0.0, nms=None, max_detections=np.int64(1))[0]) == 1
    assert detector.detect(IMAGE, ["star"], threshold=1, postprocess="hf")[0] == []  # strict > 1: nothing


def test_first_detect_on_an_untrained_head_warns_once(tiny_clip_dir):
    untrained = Detector.from_clip(str(tiny_clip_dir), image_size=64)
    assert untrained.untrained
    with pytest.warns(OvdetWarning) as record:
        untrained.detect(IMAGE, ["star"])
    said = [str(w.message) for w in record if issubclass(w.category, OvdetWarning)]
    assert len(said) == 1 and UNTRAINED_BANNER in said[0] and "ovdet train" in said[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OvdetWarning)
        untrained.detect(IMAGE, ["star"])  # once per detector, not per call


def test_a_trained_head_does_not_warn(tiny_clip_dir):
    trained = Detector.from_clip(str(tiny_clip_dir), image_size=64)
    trained.info = {**trained.info, "untrained": False}  # what training writes
    with warnings.catch_warnings():
        warnings.simplefilter("error", OvdetWarning)
        trained.detect(IMAGE, ["star"])
