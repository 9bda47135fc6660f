"""Write a loaded CLIP back in its own format (open_clip folder or transformers `save_pretrained`)."""

from __future__ import annotations

from pathlib import Path

from ovdet.towers.library_path import library_path
from ovdet.towers.loaded_clip import LoadedCLIP


def save_clip(clip: LoadedCLIP, folder: str | Path, dtype=None) -> None:
    """Write the CLIP (with any fine-tuned vision blocks) in its own format.

    `dtype` (e.g. torch.float16) applies to open_clip folders; transformers folders stay as loaded
    and get their tokenizer; all but OWL folders also get a `preprocessor_config.json` with
    the tower's normalisation, so that a reload (and transformers' processors) see the same pixels.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with library_path(folder) as writable:  # safetensors and tokenizers write to UTF-8 paths only
        _save(clip, writable, dtype)


def _save(clip: LoadedCLIP, folder: Path, dtype) -> None:
    if clip.format == "open_clip":
        from ovdet.towers.open_clip_io import save_open_clip

        save_open_clip(clip.model, folder, **({"dtype": dtype} if dtype is not None else {}))
        return
    clip.model.save_pretrained(str(folder))  # transformers: "hf", "siglip", "owlvit", "owlv2", "align", ...
    if clip.tokenizer is not None:
        clip.tokenizer.save_pretrained(str(folder))
    processor = _image_processor(clip)
    if processor is not None:
        processor.save_pretrained(str(folder))


def _image_processor(clip: LoadedCLIP):
    """transformers' image processor for the tower, with the backbone's mean/std (None for OWL folders)."""
    vision = clip.model.config.vision_config
    mean, std = list(clip.backbone.image_mean), list(clip.backbone.image_std)
    if clip.format == "siglip2":
        from transformers import Siglip2ImageProcessor

        side = clip.backbone.default_image_size // clip.backbone.stride
        return Siglip2ImageProcessor(image_mean=mean, image_std=std, patch_size=int(vision.patch_size),
                                     max_num_patches=side * side)
    size = int(vision.image_size)
    if clip.format == "siglip":
        from transformers import SiglipImageProcessor

        return SiglipImageProcessor(image_mean=mean, image_std=std, size={"height": size, "width": size})
    if clip.format == "align":  # on [0, 1] pixels, as ovdet keeps them (ALIGN's own: / 127.5 - 1, no normalise)
        from transformers import EfficientNetImageProcessor

        return EfficientNetImageProcessor(image_mean=mean, image_std=std, do_rescale=True, rescale_factor=1 / 255,
                                          rescale_offset=False, do_normalize=True, include_top=False,
                                          size={"height": size, "width": size}, crop_size={"height": size, "width": size})
    if clip.format in ("hf", "metaclip_2"):
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor(image_mean=mean, image_std=std, size={"shortest_edge": size},
                                  crop_size={"height": size, "width": size})
    return None
