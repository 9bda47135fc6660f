"""The detection head: per token a box, an objectness logit and an embedding in CLIP's text space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ovdet.boxes import corner_box_bias, grid_box_bias

# Logit given to padded (absent) queries: sigmoid -> 0, still finite in fp16.
MASKED_LOGIT = -1e4
INIT_LOGIT_SCALE = 10.0
INIT_LOGIT_SHIFT = -0.46
# OWL-ViT divides by (norm + 1e-6) rather than clamping the norm: the same here, so its weights give its logits.
NORM_EPS = 1e-6
BOX_BIAS_FUNCTIONS = {"centre": grid_box_bias, "corner": corner_box_bias}


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / (|x| + 1e-6) over the last axis, as OWL-ViT's class head normalises."""
    return x / (torch.linalg.norm(x, dim=-1, keepdim=True) + NORM_EPS)


class MLP(nn.Module):
    """Linear layers with GELU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.gelu(x)
        return x


class ContextTower(nn.Module):
    """Residual 3x3 conv blocks over the region grid (a FCOS / RetinaNet box tower).

    A per-region MLP sees one cell; an object's edges lie in its neighbours. ShapeWorld's small
    ResNet tower gave boxes of median IoU 0.64 with the MLP alone, the GIoU loss flat after 400
    steps. Each block's last conv starts at zero, so a fresh tower is the identity.
    """

    def __init__(self, dim: int, num_blocks: int):
        super().__init__()
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if dim % g == 0)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.GroupNorm(groups, dim), nn.GELU(),
                          nn.Conv2d(dim, dim, 3, padding=1))
            for _ in range(num_blocks)
        )
        for block in self.blocks:
            nn.init.zeros_(block[-1].weight)
            nn.init.zeros_(block[-1].bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, P, D] row-major over grid (h, w) -> [B, P, D]."""
        b, p, d = tokens.shape
        x = tokens.transpose(1, 2).reshape(b, d, *grid)  # [B, D, h, w]
        for block in self.blocks:
            x = x + block(x)
        return x.flatten(2).transpose(1, 2)  # [B, P, D]


class DetectionHead(nn.Module):
    """OWL-ViT-style head over dense tokens; the vocabulary is an input, never a layer size.

    Args:
        token_dim: D, width of the backbone tokens.
        embed_dim: E, width of the text embeddings the regions are compared with.
        box_layers: depth of the box MLP.
        objectness_layers: depth of the objectness MLP (OWLv2: 3); 0 has none (OWL-ViT) and gives 0 logits.
        box_bias: "centre" (the cell's own box) or "corner" (OWL-ViT's grid-corner prior).
        context_blocks: residual 3x3 conv blocks (ContextTower) that boxes and objectness see the
            neighbouring regions through; 0 keeps them per-region. Region embeddings stay per-region.
    """

    def __init__(
        self,
        token_dim: int,
        embed_dim: int,
        box_layers: int = 3,
        context_blocks: int = 0,
        objectness_layers: int = 2,
        box_bias: str = "centre",
    ):
        super().__init__()
        if context_blocks < 0 or objectness_layers < 0 or box_layers < 1:
            raise ValueError(f"need box_layers >= 1, objectness_layers >= 0, context_blocks >= 0; got "
                             f"{box_layers}, {objectness_layers}, {context_blocks}")
        if box_bias not in BOX_BIAS_FUNCTIONS:
            raise ValueError(f"box_bias must be one of {sorted(BOX_BIAS_FUNCTIONS)}, got {box_bias!r}")
        self.box_bias_kind = box_bias
        self.token_dim = token_dim
        self.embed_dim = embed_dim
        self.context = ContextTower(token_dim, context_blocks) if context_blocks else None
        self.box_mlp = MLP(token_dim, token_dim, 4, box_layers)
        self.objectness_mlp = MLP(token_dim, token_dim, 1, objectness_layers) if objectness_layers else None
        self.class_proj = nn.Linear(token_dim, embed_dim)
        self.logit_shift = nn.Linear(token_dim, 1)
        self.logit_scale = nn.Linear(token_dim, 1)
        self._bias_cache: dict[tuple[int, int], torch.Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Zero last box layer: the untrained prediction is the grid prior (each patch's own box).
        nn.init.zeros_(self.box_mlp.layers[-1].weight)
        nn.init.zeros_(self.box_mlp.layers[-1].bias)
        # Objects are rare among regions: start objectness low, like RetinaNet's prior.
        if self.objectness_mlp is not None:
            nn.init.constant_(self.objectness_mlp.layers[-1].bias, -4.0)
        # Tokens already in CLIP's joint space (a ResNet tower's attention-pool projection,
        # MaskCLIP / F-VLM) start with an identity projection, so the untrained head scores
        # regions zero-shot and training on base classes starts from what CLIP knows.
        if self.token_dim == self.embed_dim:
            nn.init.eye_(self.class_proj.weight)
            nn.init.zeros_(self.class_proj.bias)
        # Start at a CLIP-like temperature (scale ~10) with a shift that gives a region of cosine
        # 0 the focal-loss prior probability 0.01: logit = 10 * (0 - 0.46) = -4.6.
        nn.init.zeros_(self.logit_scale.weight)
        nn.init.constant_(self.logit_scale.bias, INIT_LOGIT_SCALE - 1.0)
        nn.init.zeros_(self.logit_shift.weight)
        nn.init.constant_(self.logit_shift.bias, INIT_LOGIT_SHIFT)

    @torch.no_grad()
    def init_logit_scale(self, logit_scale: float, logit_shift: float) -> None:
        """Start the scores at a tower's own calibration: logits = (cos + shift) * scale (SigLIP's
        exp(t) * cos + b is scale = exp(t), shift = b / exp(t)); scale is elu(x) + 1, so x = scale - 1."""
        nn.init.zeros_(self.logit_scale.weight)
        nn.init.constant_(self.logit_scale.bias, logit_scale - 1.0)
        nn.init.zeros_(self.logit_shift.weight)
        nn.init.constant_(self.logit_shift.bias, logit_shift)

    def box_bias(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        if grid not in self._bias_cache:
            self._bias_cache[grid] = BOX_BIAS_FUNCTIONS[self.box_bias_kind](*grid)
        return self._bias_cache[grid].to(device)  # [h*w, 4]

    def region_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, P, D] -> L2-normalised [B, P, E]; also what image-exemplar queries are made of."""
        return l2_normalize(self.class_proj(tokens))

    def forward(
        self,
        tokens: torch.Tensor,
        grid: tuple[int, int],
        query_embeds: torch.Tensor,
        query_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Score every region against every query.

        Args:
            tokens: [B, P, D] dense backbone features, P = h*w.
            grid: (h, w).
            query_embeds: [Q, E] shared by the batch, or [B, Q, E] per image; L2-normalised.
            query_mask: [B, Q] bool, True for real queries (per-image vocabularies are padded).
        Returns:
            dict with `pred_boxes` [B, P, 4] cxcywh in 0..1 of the padded input, `logits`
            [B, P, Q], `objectness` [B, P], `region_embeds` [B, P, E].
        """
        local = self.context(tokens, grid) if self.context is not None else tokens  # [B, P, D]
        boxes = torch.sigmoid(self.box_mlp(local) + self.box_bias(grid, tokens.device))  # [B, P, 4]
        if self.objectness_mlp is not None:
            objectness = self.objectness_mlp(local).squeeze(-1)  # [B, P]
        else:
            objectness = tokens.new_zeros(tokens.shape[:2])  # [B, P]: no objectness head (OWL-ViT)
        region = self.region_embeddings(tokens)  # [B, P, E]
        queries = l2_normalize(query_embeds.to(region.dtype))
        if queries.dim() == 2:
            sim = torch.einsum("bpe,qe->bpq", region, queries)  # [B, P, Q]
        else:
            sim = torch.einsum("bpe,bqe->bpq", region, queries)  # [B, P, Q]
        shift = self.logit_shift(tokens)  # [B, P, 1]
        scale = F.elu(self.logit_scale(tokens)) + 1  # [B, P, 1], positive
        logits = (sim + shift) * scale  # [B, P, Q]
        if query_mask is not None:
            logits = logits.masked_fill(~query_mask[:, None, :], MASKED_LOGIT)
        out = {"pred_boxes": boxes, "logits": logits, "objectness": objectness, "region_embeds": region}
        if query_mask is not None:
            out["query_mask"] = query_mask
        return out
