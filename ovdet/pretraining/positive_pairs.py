"""Which texts of a batch truly describe which images: the extra positives of the contrastive loss."""

from __future__ import annotations

import torch

NAMED = ("color", "style")  # the attributes a crop phrase may name besides its shape


def named_attributes(text: str, attributes: dict) -> dict[str, str]:
    """What a crop's phrase says about it: its shape, plus each attribute whose word it uses.

    'a photo of a red star' -> {"shape": "star", "color": "red"}; the phrase was written for
    this object, so a word equal to its colour or style means that attribute was named.
    """
    words = set(text.rstrip(".").split())
    return {"shape": attributes["shape"]} | {k: attributes[k] for k in NAMED if attributes[k] in words}


def positive_pairs(texts: list[str], attributes: list[dict | None]) -> torch.Tensor:
    """[B, B] bool: True where text j describes image i.

    Identical texts describe each other's images. A crop phrase also describes every crop of
    the batch with the shape and the attributes it names ("a star" fits every star, "a red
    star" every red star). Scene captions are matched only by identical text.

    Args:
        texts: B texts, pair i is (image i, text i).
        attributes: per pair, the crop's {"shape", "color", "style", ...}, or None for a scene.
    """
    ids = {t: k for k, t in enumerate(dict.fromkeys(texts))}
    text_id = torch.tensor([ids[t] for t in texts])  # [B]
    pos = text_id[:, None] == text_id[None, :]  # [B, B]
    crops = [i for i, a in enumerate(attributes) if a is not None]
    if not crops:
        return pos
    vocab: dict[str, int] = {}

    def code(value: str | None) -> int:  # -1: not named
        return -1 if value is None else vocab.setdefault(value, len(vocab))

    keys = ("shape", *NAMED)
    image = torch.tensor([[code(attributes[i][k]) for k in keys] for i in crops])  # [C, 3] what each crop is
    said = [named_attributes(texts[j], attributes[j]) for j in crops]
    text = torch.tensor([[code(s.get(k)) for k in keys] for s in said])  # [C, 3] what each phrase names
    fits = ((text[None, :, :] == -1) | (text[None, :, :] == image[:, None, :])).all(-1)  # [C, C] image i, text j
    index = torch.tensor(crops)
    pos[index[:, None], index[None, :]] |= fits
    return pos
