"""A vision tower seen as CLIPSelf / F-VLM see it: a dense map to pool boxes from, the tower's own pooling
into the joint image-text space, and the tower's embedding of a whole (crop) image.

One small interface, one class per tower family, so the distillation stage and the zero-shot measures never
ask which family they hold. The wrapped modules are the loaded CLIP's own (not copies): training a
`RegionTower` trains the `LoadedCLIP.model` it came from, which `save_clip` then writes.
"""

from __future__ import annotations

import torch
from torch import nn

from ovdet.errors import OvdetError
from ovdet.towers.loaded_clip import LoadedCLIP
from ovdet.towers.vision_resnet import CLIPResNetBackbone
from ovdet.towers.vision_siglip import SiglipVisionBackbone
from ovdet.towers.vision_vit import CLIPVisionBackbone


class RegionTower(nn.Module):
    """Interface: `dense_map` -> RoIAlign (`roi_size`) -> `pool_regions` gives region embeddings [K, E];
    `encode_crops` gives the tower's image embedding of crops [K, E]; `cell_embeddings` one per map cell.

    Subclasses set `crop_size` (the resolution the tower was trained at, crops are resized to it) and
    `roi_size` (RoIAlign output side that `pool_regions` takes).
    """

    crop_size: int
    roi_size: int

    def dense_map(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """[B, 3, S, S] normalised -> [B, C, h, w], the map boxes are RoI-aligned from."""
        raise NotImplementedError

    def pool_regions(self, rois: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """[K, C, r, r] RoI-aligned features -> [K, E] joint-space embeddings (not normalised)."""
        raise NotImplementedError

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """[K, 3, c, c] normalised crops -> [K, E], the tower's own image embedding (not normalised)."""
        raise NotImplementedError

    def cell_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """[B, 3, S, S] -> [B, E, h, w]: each cell alone in the joint space (the one-pass dense path)."""
        raise NotImplementedError

    def set_trainable_layers(self, n: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The tower's own weights that train (never the backbone's detection-only `merge_norm`)."""
        return [p for p in self.backbone.vision.parameters() if p.requires_grad]


class ResNetRegionTower(RegionTower):
    """A CLIP ResNet: the layer3 map, RoIAlign to layer3's own grid at the tower's resolution, then the tower's
    last stage and attention pool on each box (Faster R-CNN's C4 head with CLIP's own weights).

    A box the size of a crop thus goes through exactly the layers its crop would, on features the whole image
    shaped; at the tower's training resolution a whole-input box is CLIP's image embedding itself. Measured on
    ShapeWorld (docs/RESULTS.md section 5): frozen, this names 43 % of boxes right where RoIAlign on layer4
    through the attention pool (F-VLM) names 24 %. Cells alone go through the pool's value and output
    projections (MaskCLIP), what the pooled embedding is a weighted sum of.
    """

    def __init__(self, backbone: CLIPResNetBackbone):
        super().__init__()
        self.backbone = backbone
        self.roi_size = backbone.region_roi_size
        self.crop_size = backbone.crop_size

    def dense_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone.feature_maps(pixel_values)[0]  # [B, C3, S/16, S/16]

    def pool_regions(self, rois: torch.Tensor) -> torch.Tensor:
        return self.backbone.pool_region_features(rois)  # [K, C3, r, r] -> [K, E]

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_crops(crops)  # [K, E]

    def cell_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pool = self.backbone.vision.attnpool
        fmap = self.backbone.feature_map(pixel_values)  # [B, C, S/32, S/32]
        cells = pool.c_proj(pool.v_proj(fmap.permute(0, 2, 3, 1)))  # [B, h, w, E]
        return cells.permute(0, 3, 1, 2)  # [B, E, h, w]

    def set_trainable_layers(self, n: int) -> None:
        """The last `n` ResNet stages and the attention pool train; BatchNorm statistics stay frozen."""
        self.backbone.set_trainable_layers(n)


class ViTRegionTower(RegionTower):
    """A CLIP ViT (transformers layout: CLIP, OpenCLIP converted, OWL): every patch token through the tower's
    final LayerNorm and visual projection, then RoIAlign to 1x1 (CLIPSelf's `encode_dense` + `roi_align`).

    CLIPSelf projects each token before pooling; the class token, which makes the image embedding, is left
    out, so a whole-image box is not the image embedding until the stage has taught the tokens to agree.
    """

    roi_size = 1

    def __init__(self, backbone: CLIPVisionBackbone, projection: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.projection = projection.requires_grad_(False)
        self.crop_size = backbone.default_image_size

    def dense_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.patch_tokens(pixel_values)[:, 1:]  # [B, h*w, D] after the final LayerNorm
        h, w = self.backbone.grid_size(pixel_values.shape[-1])
        joint = self.projection(tokens)  # [B, h*w, E]
        return joint.transpose(1, 2).reshape(joint.shape[0], -1, h, w)  # [B, E, h, w]

    def pool_regions(self, rois: torch.Tensor) -> torch.Tensor:
        return rois.flatten(1)  # [K, E, 1, 1] -> [K, E]

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        out = self.backbone.vision(pixel_values=crops, interpolate_pos_encoding=True)
        return self.projection(out.pooler_output)  # [K, E]: final LayerNorm on the class token, then projection

    def cell_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.dense_map(pixel_values)  # [B, E, h, w]

    def set_trainable_layers(self, n: int) -> None:
        """The last `n` encoder blocks and the final LayerNorm train; the projection stays (the text side's space)."""
        self.backbone.set_trainable_layers(n)


class SiglipRegionTower(RegionTower):
    """A SigLIP ViT: its patch tokens (after `post_layernorm`) RoI-aligned to the tower's own token grid, then
    SigLIP's own MAP head (attention pooling) over each box's tokens, as the ResNet's attention pool.

    At the tower's training resolution a whole-input box samples every token at its centre, so its region
    embedding is SigLIP's image embedding itself; SigLIP has no projection, the head's output is the joint
    space. Cells alone go through the head one token at a time.
    """

    def __init__(self, backbone: SiglipVisionBackbone):
        super().__init__()
        if not getattr(backbone.vision, "use_head", False):
            raise OvdetError("this SigLIP vision tower has no MAP head (vision_use_head=False), so it has no "
                             "embedding of its own to distil toward; use a SigLIP with its head")
        self.backbone = backbone
        self.roi_size = backbone.default_image_size // backbone.stride
        self.crop_size = backbone.default_image_size

    def dense_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.backbone.encode(pixel_values)  # [B, h*w, D]
        h, w = self.backbone.grid_size(pixel_values.shape[-1])
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)  # [B, D, h, w]

    def pool_regions(self, rois: torch.Tensor) -> torch.Tensor:
        return self.backbone.vision.head(rois.flatten(2).transpose(1, 2))  # [K, D, r, r] -> [K, r*r, D] -> [K, D]

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(crops)[1]  # [K, D], the MAP head's pooled output

    def cell_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        fmap = self.dense_map(pixel_values)  # [B, D, h, w]
        b, d, h, w = fmap.shape
        cells = self.backbone.vision.head(fmap.flatten(2).transpose(1, 2).reshape(b * h * w, 1, d))  # [B*h*w, D]
        return cells.reshape(b, h, w, d).permute(0, 3, 1, 2)  # [B, D, h, w]

    def set_trainable_layers(self, n: int) -> None:
        """The last `n` encoder blocks, post_layernorm and the MAP head train."""
        self.backbone.set_trainable_layers(n)


def region_tower(clip: LoadedCLIP) -> RegionTower:
    """The region view of a loaded CLIP's vision tower (ResNet, transformers-layout ViT, or SigLIP)."""
    backbone = clip.backbone
    own = getattr(backbone, "region_tower", None)  # a family that brings its own view (ALIGN, EVA, MobileCLIP...)
    if callable(own):
        return own(clip)
    if isinstance(backbone, CLIPResNetBackbone):
        return ResNetRegionTower(backbone)
    if isinstance(backbone, SiglipVisionBackbone):
        return SiglipRegionTower(backbone)
    projection = getattr(clip.model, "visual_projection", None)
    if isinstance(backbone, CLIPVisionBackbone) and isinstance(projection, nn.Linear):
        return ViTRegionTower(backbone, projection)
    raise OvdetError(
        f"'{clip.reference}' ({clip.format}, {type(backbone).__name__}) has no region pooling yet; "
        "use a CLIP ResNet (open_clip), a CLIP/OpenCLIP/OWL ViT or a SigLIP"
    )
