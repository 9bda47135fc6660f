"""int8 for a ResNet CLIP tower: its convolutions quantised statically, activation ranges calibrated once.

torch's dynamic quantisation covers Linear layers only, and a ResNet tower is convolutions. Static
post-training quantisation (torch.ao FX: int8 convolutions, each BatchNorm folded into its
convolution, ReLU fused) needs each activation's range before it runs, so the
stages are observed on a few calibration images first. The attention pool stays fp32: its weights
are read directly (`global_embedding`) and it is a small share of the work.

Measured (2 threads, AVX512 EPYC, the embedded 256 px model's stem and stages): batch 1 3.9 -> 1.2 ms,
batch 8 44 -> 6 ms.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

STAGES = ("layer1", "layer2", "layer3", "layer4")
STEM = ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3", "avgpool")
BACKENDS = ("x86", "onednn")


class Stem(nn.Module):
    """open_clip ModifiedResNet's stem as a module (there it is a method, which FX cannot quantise alone)."""

    def __init__(self, vision: nn.Module):
        super().__init__()
        for name in STEM:
            setattr(self, name, getattr(vision, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.act3(self.bn3(self.conv3(x)))
        return self.avgpool(x)


class Trunk(nn.Module):
    """Stem and stages, each an int8 module (or its observed float form) taking and returning float tensors."""

    def __init__(self, stages: dict[str, nn.Module]):
        super().__init__()
        for name, module in stages.items():
            setattr(self, name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, C, H/32, W/32]."""
        x = self.stem(x)
        for name in STAGES:
            x = getattr(self, name)(x)
        return x


class Int8ResNet(nn.Module):
    """What `CLIPResNetBackbone` calls on its tower (`stem`, `layer1..4`, `attnpool`, `image_size`, and a
    call on crops).

    Whole images and crops go through two copies of the same int8 stages (identical quantisation
    parameters): oneDNN keeps one prepared kernel per convolution for the last input shape, and
    alternating image and crop shapes rebuilt them on every call (batch 1 gained 7 % instead of 2x).
    """

    def __init__(self, images: Trunk, crops: Trunk, attnpool: nn.Module, image_size):
        super().__init__()
        self.images, self.crops = images, crops
        self.stem = images.stem
        for name in STAGES:
            setattr(self, name, getattr(images, name))
        self.attnpool = attnpool
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled CLIP embedding, as ModifiedResNet.forward: [N, 3, c, c] -> [N, E]."""
        return self.attnpool(self.crops(x))


def calibration_crops(pixel_values: torch.Tensor, crop_size: int, per_image: int = 4, seed: int = 0) -> torch.Tensor:
    """Random square-ish crops of calibration images at the re-scorer's crop size, since the tower also
    sees those (`encode_crops`): [B, 3, S, S] -> [B * per_image, 3, c, c]."""
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(seed)
    b, _, s, _ = pixel_values.shape
    side = s * (0.1 + 0.4 * torch.rand(b * per_image, 1, generator=g))  # [N, 1] pixels
    corner = (s - side) * torch.rand(b * per_image, 2, generator=g)  # [N, 2]
    index = torch.arange(b).repeat_interleave(per_image)[:, None].float()  # [N, 1]
    rois = torch.cat([index, corner, corner + side], 1)  # [N, 5] (image, x1, y1, x2, y2)
    return roi_align(pixel_values, rois, output_size=(crop_size, crop_size), aligned=True)


@torch.no_grad()
def int8_resnet(vision: nn.Module, calibration: list[torch.Tensor], backend: str = "x86") -> Int8ResNet:
    """An int8 copy of an open_clip ModifiedResNet (the original is untouched).

    Args:
        vision: the frozen fp32 tower (`model.visual`), in eval mode.
        calibration: batches of normalised pixels [N, 3, H, W] the tower will see (whole images at the
            detector's size, crops at the re-scorer's); every activation's range is taken over all of them.
        backend: torch's quantised engine and its default settings: "onednn" (8-bit activations; needs
            VNNI / AMX int8 instructions, which compute them without overflow) or "x86" (7-bit
            activations, right on every x86 CPU).
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not calibration:
        raise ValueError("int8 for a ResNet tower needs calibration images; got none")
    vision = copy.deepcopy(vision).eval()
    qconfig = get_default_qconfig_mapping(backend)
    engine = torch.backends.quantized.engine
    # The engine picks the weight packing at conversion; the packed convolutions then run the same under
    # any engine, so the process-wide setting is put back (a leaked "onednn" changed later ViT int8 models).
    torch.backends.quantized.engine = backend
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices: nothing a user can act on
            stages, x = {}, calibration[0][:1]
            for name in ("stem", *STAGES):
                module = Stem(vision) if name == "stem" else getattr(vision, name)
                stages[name] = prepare_fx(module, qconfig, (x,))  # observers, still float arithmetic
                x = stages[name](x)
            observed = Trunk(stages)
            for batch in calibration:
                observed(batch.float())
            images, crops = (Trunk({name: convert_fx(copy.deepcopy(m)) for name, m in stages.items()})
                             for _ in range(2))
    finally:
        torch.backends.quantized.engine = engine
    return Int8ResNet(images, crops, vision.attnpool, vision.image_size).eval()


CALIBRATION_IMAGES = 64  # ShapeWorld held-out AP50 gap to fp32 fell from ~1 point with 8 to ~0.1 with 64 (docs/PERFORMANCE.md)


def default_calibration_images(count: int = CALIBRATION_IMAGES) -> list:
    """Images to calibrate on when the caller gives none: the bundled scene and ShapeWorld scenes
    (fixed seeds, so the same int8 model every time). Right for ShapeWorld models such as the embedded
    one; for a tower trained on photos pass photos of the kind it will see."""
    from PIL import Image

    from ovdet.assets import SCENE
    from ovdet.data.shapeworld import render_scene

    images = [Image.open(SCENE).convert("RGB")]
    images += [render_scene((8_808, i))[0] for i in range(count - 1)]
    return images


def calibration_batches(preprocessor, crop_size: int, images: list, batch_size: int = 8) -> list[torch.Tensor]:
    """Calibration images -> the batches `int8_resnet` observes, `batch_size` images at a time: whole
    images at the detector's input size, crops of them and the whole image at the tower's own size."""
    batches = []
    for start in range(0, len(images), batch_size):
        pixels = preprocessor.to_model(images[start : start + batch_size])  # [b, 3, S, S]
        whole = F.interpolate(pixels, size=crop_size, mode="bilinear", antialias=True, align_corners=False)
        batches += [pixels, torch.cat([calibration_crops(pixels, crop_size, seed=start), whole])]
    return batches
