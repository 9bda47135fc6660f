"""HungarianMatcher: batched == per-image, empty targets, perfect predictions, padded queries."""

from __future__ import annotations

import pytest
import torch

from ovdet.losses import HungarianMatcher


def random_batch(num_real_queries: list[int], num_boxes: list[int], num_regions: int = 20, pad_to: int = 8):
    """Random outputs with padded queries (query_mask) and targets on real queries only."""
    bs = len(num_real_queries)
    query_mask = torch.zeros(bs, pad_to, dtype=torch.bool)  # [B, Q]
    for i, q in enumerate(num_real_queries):
        query_mask[i, :q] = True
    outputs = {
        "logits": torch.randn(bs, num_regions, pad_to) * 3,  # [B, P, Q]
        "pred_boxes": torch.rand(bs, num_regions, 4) * 0.5 + 0.1,  # [B, P, 4]
        "objectness": torch.randn(bs, num_regions),  # [B, P]
        "query_mask": query_mask,
    }
    targets = [
        {
            "labels": torch.randint(0, q, (n,), dtype=torch.int64),
            "boxes_cxcywh": torch.rand(n, 4) * 0.5 + 0.1,
        }
        for q, n in zip(num_real_queries, num_boxes)
    ]
    return outputs, targets


def image_slice(outputs: dict[str, torch.Tensor], i: int, num_queries: int | None = None) -> dict[str, torch.Tensor]:
    """Outputs of image i alone, optionally with its padded queries cut off."""
    q = num_queries if num_queries is not None else outputs["logits"].shape[-1]
    return {
        "logits": outputs["logits"][i : i + 1, :, :q],
        "pred_boxes": outputs["pred_boxes"][i : i + 1],
        "objectness": outputs["objectness"][i : i + 1],
        "query_mask": outputs["query_mask"][i : i + 1, :q],
    }


def assert_same_matches(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for (ra, ca), (rb, cb) in zip(a, b):
        assert torch.equal(ra, rb) and torch.equal(ca, cb)


def test_batched_equals_per_image():
    torch.manual_seed(0)
    real, sizes = [8, 3, 5, 1, 6], [4, 0, 7, 1, 12]
    outputs, targets = random_batch(real, sizes)
    matcher = HungarianMatcher()
    batched = matcher(outputs, targets)
    for i, (q, n) in enumerate(zip(real, sizes)):
        rows, cols = batched[i]
        assert rows.dtype == cols.dtype == torch.int64
        assert len(rows) == len(cols) == n  # P = 20 >= N: every target is matched once
        assert len(set(rows.tolist())) == n and sorted(cols.tolist()) == list(range(n))
        single = matcher(image_slice(outputs, i), [targets[i]])
        stripped = matcher(image_slice(outputs, i, q), [targets[i]])  # padded queries removed
        assert_same_matches([batched[i]], single)
        assert_same_matches([batched[i]], stripped)


def test_empty_targets_give_empty_matches():
    torch.manual_seed(1)
    outputs, targets = random_batch([4, 4, 4], [0, 0, 0])
    matches = HungarianMatcher()(outputs, targets)
    assert len(matches) == 3
    for rows, cols in matches:
        assert rows.shape == cols.shape == (0,)
        assert rows.dtype == cols.dtype == torch.int64


def test_perfect_prediction_is_matched_to_its_target():
    torch.manual_seed(2)
    outputs, targets = random_batch([6, 6], [3, 4], num_regions=30)
    outputs["logits"].fill_(-10.0)
    chosen = [torch.tensor([17, 2, 25]), torch.tensor([0, 29, 11, 5])]
    for i, regions in enumerate(chosen):
        outputs["pred_boxes"][i, regions] = targets[i]["boxes_cxcywh"]
        outputs["logits"][i, regions, targets[i]["labels"]] = 10.0
    for i, (rows, cols) in enumerate(HungarianMatcher()(outputs, targets)):
        assert dict(zip(cols.tolist(), rows.tolist())) == dict(enumerate(chosen[i].tolist()))


def test_class_cost_alone_follows_the_right_query():
    """Same boxes everywhere: only the logit of the target's own query decides the match."""
    torch.manual_seed(3)
    outputs, targets = random_batch([4], [2], num_regions=10)
    outputs["pred_boxes"][:] = torch.tensor([0.5, 0.5, 0.2, 0.2])
    outputs["logits"].fill_(-5.0)
    targets[0]["labels"] = torch.tensor([1, 3])
    outputs["logits"][0, 7, 1] = 5.0
    outputs["logits"][0, 4, 3] = 5.0
    outputs["logits"][0, 2, 0] = 9.0  # high, but for a query no target names
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 7, 1: 4}


def test_padded_queries_are_ignored():
    torch.manual_seed(4)
    outputs, targets = random_batch([3, 5], [4, 6])
    matcher = HungarianMatcher()
    reference = matcher(outputs, targets)
    padded = ~outputs["query_mask"][:, None, :].expand_as(outputs["logits"])  # [B, P, Q]
    for garbage in (1e4, -1e4, float("nan"), float("inf")):
        noisy = dict(outputs, logits=outputs["logits"].masked_fill(padded, garbage))
        assert_same_matches(reference, matcher(noisy, targets))


def test_more_targets_than_regions_matches_every_region():
    torch.manual_seed(5)
    outputs, targets = random_batch([4], [9], num_regions=5)
    rows, cols = HungarianMatcher()(outputs, targets)[0]
    assert sorted(rows.tolist()) == list(range(5)) and len(set(cols.tolist())) == 5


def test_without_query_mask_all_queries_are_valid():
    torch.manual_seed(6)
    outputs, targets = random_batch([8, 8], [3, 2])
    without = {k: v for k, v in outputs.items() if k != "query_mask"}
    assert_same_matches(HungarianMatcher()(outputs, targets), HungarianMatcher()(without, targets))


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda o, t: t[0].update(labels=torch.tensor([4, 0, 0])), "padded query"),
        (lambda o, t: t[0].update(labels=torch.tensor([8, 0, 0])), "must index"),
        (lambda o, t: t[0]["boxes_cxcywh"].__setitem__((1, 2), 0.0), "width and height"),
        (lambda o, t: o["pred_boxes"].__setitem__((0, 3, 0), float("nan")), "NaN/inf"),
        (lambda o, t: o.update(pred_boxes=o["pred_boxes"][:, :5]), "pred_boxes"),
        (lambda o, t: t.pop(), "target dicts"),
    ],
)
def test_bad_inputs_raise_value_error(break_it, message):
    torch.manual_seed(7)
    outputs, targets = random_batch([4, 4], [3, 2])
    break_it(outputs, targets)
    with pytest.raises(ValueError, match=message):
        HungarianMatcher()(outputs, targets)
