import numpy as np
import pytest
import torch

from ovdet.data.transforms import Augmentation, build_transform
from ovdet.preprocess import OPENAI_MEAN, OPENAI_STD

S = 64


def _image(w=80, h=50, seed=0):
    return np.random.default_rng(seed).integers(30, 220, size=(h, w, 3), dtype=np.uint8)


def test_eval_resizes_longest_side_and_pads_bottom_right_with_the_mean():
    t = build_transform(S, OPENAI_MEAN, OPENAI_STD)
    out = t(image=_image(80, 50), bboxes=np.array([[8.0, 5.0, 40.0, 45.0]]), names=["cat"])
    x = out["image"]
    assert x.shape == (3, S, S) and x.dtype == torch.float32
    scale = S / 80
    np.testing.assert_allclose(np.asarray(out["bboxes"]), [[8 * scale, 5 * scale, 40 * scale, 45 * scale]], atol=1e-4)
    assert list(out["names"]) == ["cat"]
    content_h = round(50 * scale)  # 40
    assert torch.all(x[:, content_h:, :] == 0)  # padding is 0 after normalising = the mean colour
    assert x[:, :content_h, :].abs().sum() > 0


def test_eval_matches_inference_preprocessing():
    from PIL import Image

    from ovdet.preprocess import ImagePreprocessor

    image = _image(96, 72)
    ours = build_transform(S, OPENAI_MEAN, OPENAI_STD)(image=image, bboxes=np.zeros((0, 4)), names=[])["image"]
    theirs = ImagePreprocessor(S, OPENAI_MEAN, OPENAI_STD).to_tensor(Image.fromarray(image))
    assert ours.shape == theirs.shape
    assert torch.equal(ours == 0, theirs == 0)  # same content area and padding
    assert (ours - theirs).abs().mean() < 0.15  # same pixels up to the resampling filter


def test_inference_resizes_as_uint8_within_one_grey_level_and_keeps_a_native_size_exact():
    import torch.nn.functional as F
    from PIL import Image

    from ovdet.preprocess import ImagePreprocessor

    pre = ImagePreprocessor(S, OPENAI_MEAN, OPENAI_STD)
    mean, std = torch.tensor(OPENAI_MEAN).view(3, 1, 1), torch.tensor(OPENAI_STD).view(3, 1, 1)
    image = _image(96, 72)
    pixels = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255  # the float resize it replaced
    content = F.interpolate(pixels, size=(48, 64), mode="bilinear", antialias=True, align_corners=False)[0]
    got = pre.to_tensor(Image.fromarray(image))
    assert torch.all(got[:, 48:] == 0)
    grey_levels = ((got[:, :48] * std + mean) - content).abs() * 255
    assert grey_levels.max() <= 1.0 and grey_levels.mean() < 0.3  # uint8 passes round twice: within one level
    native = _image(S, 40)  # the longest side already S: no resampling at all
    exact = (torch.from_numpy(native).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(pre.to_tensor(Image.fromarray(native))[:, :40], exact, rtol=0, atol=1e-6)


def test_augmented_boxes_stay_inside_the_image_and_keep_positive_size():
    t = build_transform(S, OPENAI_MEAN, OPENAI_STD, Augmentation(scale_range=(0.3, 2.0)))
    boxes = np.array([[0.0, 0.0, 30.0, 20.0], [50.0, 10.0, 80.0, 50.0], [20.0, 20.0, 60.0, 40.0]])
    seen = 0
    for seed in range(60):
        t.set_random_seed(seed)
        out = t(image=_image(80, 50, seed), bboxes=boxes, names=["a", "b", "c"])
        assert out["image"].shape == (3, S, S)
        b = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        assert len(b) == len(out["names"])
        assert (b >= 0).all() and (b <= S).all()
        assert ((b[:, 2] - b[:, 0]) >= 1).all() and ((b[:, 3] - b[:, 1]) >= 1).all()
        seen += len(b)
    assert seen > 60  # most boxes survive; some are cut away by zoom-in crops


def test_horizontal_flip_mirrors_boxes_within_the_image_not_the_padding():
    aug = Augmentation(scale_range=(1.0, 1.0), hflip_p=1.0, color_p=0.0)
    t = build_transform(S, OPENAI_MEAN, OPENAI_STD, aug)
    out = t(image=_image(40, 80), bboxes=[[0.0, 0.0, 20.0, 10.0]], names=["a"])
    # 40x80 -> 32x64 content, padded to the right: mirrored within x 0..32, not 0..64
    np.testing.assert_allclose(np.asarray(out["bboxes"]), [[16.0, 0.0, 32.0, 8.0]], atol=1e-4)


def test_same_seed_same_augmentation():
    t = build_transform(S, OPENAI_MEAN, OPENAI_STD, Augmentation())
    runs = []
    for seed in (3, 3, 4):
        t.set_random_seed(seed)
        runs.append(t(image=_image(), bboxes=[[10.0, 10.0, 40.0, 40.0]], names=["a"])["image"])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("kwargs", [{"scale_range": (0.0, 1.0)}, {"scale_range": (2.0, 1.0)}, {"hflip_p": 1.5}])
def test_bad_augmentation_raises(kwargs):
    with pytest.raises(ValueError):
        Augmentation(**kwargs)
