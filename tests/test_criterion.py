"""SetCriterion: near-zero for perfect predictions, decreasing box losses, gradients, padding."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ovdet.losses import HungarianMatcher, SetCriterion

LOSS_NAMES = ("loss_cls", "loss_bbox", "loss_giou", "loss_obj")


def make_criterion(**kwargs) -> SetCriterion:
    return SetCriterion(HungarianMatcher(), **kwargs)


def random_outputs(bs: int = 2, num_regions: int = 16, num_queries: int = 5, requires_grad: bool = False):
    outputs = {
        "logits": torch.randn(bs, num_regions, num_queries),  # [B, P, Q]
        "pred_boxes": torch.rand(bs, num_regions, 4) * 0.4 + 0.1,  # [B, P, 4]
        "objectness": torch.randn(bs, num_regions),  # [B, P]
    }
    for tensor in outputs.values():
        tensor.requires_grad_(requires_grad)
    return outputs


def random_targets(sizes: list[int], num_queries: int = 5) -> list[dict[str, torch.Tensor]]:
    return [
        {"labels": torch.randint(0, num_queries, (n,)), "boxes_cxcywh": torch.rand(n, 4) * 0.4 + 0.2} for n in sizes
    ]


def perfect_outputs(targets, chosen, num_regions: int = 16, num_queries: int = 5, margin: float = 20.0):
    """Exact boxes, +margin logits / objectness at the chosen regions, -margin everywhere else."""
    outputs = random_outputs(len(targets), num_regions, num_queries)
    outputs["logits"].fill_(-margin)
    outputs["objectness"].fill_(-margin)
    for i, regions in enumerate(chosen):
        outputs["pred_boxes"][i, regions] = targets[i]["boxes_cxcywh"]
        outputs["logits"][i, regions, targets[i]["labels"]] = margin
        outputs["objectness"][i, regions] = margin
    return outputs


def test_perfect_prediction_gives_near_zero_losses():
    torch.manual_seed(0)
    targets = random_targets([3, 2])
    chosen = [torch.tensor([4, 9, 15]), torch.tensor([0, 7])]
    losses, indices = make_criterion()(perfect_outputs(targets, chosen), targets, return_indices=True)
    assert set(losses) == set(LOSS_NAMES)
    for name, value in losses.items():
        assert value.dim() == 0 and 0 <= value.item() < 1e-4, (name, value)
    for (rows, cols), regions in zip(indices, chosen):
        assert dict(zip(cols.tolist(), rows.tolist())) == dict(enumerate(regions.tolist()))


def test_imperfect_prediction_is_clearly_worse():
    torch.manual_seed(1)
    targets = random_targets([3, 2])
    losses = make_criterion()(random_outputs(), targets)
    assert all(losses[name].item() > 1e-2 for name in LOSS_NAMES)


def test_box_losses_decrease_as_boxes_move_toward_targets():
    torch.manual_seed(2)
    targets = random_targets([3, 4])
    chosen = [torch.tensor([1, 5, 12]), torch.tensor([3, 8, 10, 14])]
    outputs = perfect_outputs(targets, chosen, margin=6.0)  # class cost pins the matching to `chosen`
    start = torch.rand_like(outputs["pred_boxes"]) * 0.4 + 0.1  # [B, P, 4]
    target_at_chosen = outputs["pred_boxes"].clone()  # [B, P, 4]
    criterion = make_criterion()
    history = []
    for t in (0.0, 0.3, 0.6, 0.9, 1.0):
        moved = dict(outputs, pred_boxes=(1 - t) * start + t * target_at_chosen)
        losses = criterion(moved, targets)
        history.append((losses["loss_bbox"].item(), losses["loss_giou"].item()))
    for (l1_a, giou_a), (l1_b, giou_b) in zip(history, history[1:]):
        assert l1_b < l1_a and giou_b < giou_a
    assert history[-1][0] < 1e-6 and history[-1][1] < 1e-6


def test_gradients_reach_all_outputs():
    torch.manual_seed(3)
    outputs = random_outputs(requires_grad=True)
    criterion = make_criterion()
    criterion.weighted_total(criterion(outputs, random_targets([2, 3]))).backward()
    for name in ("logits", "pred_boxes", "objectness"):
        grad = outputs[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_all_empty_targets_give_finite_losses():
    torch.manual_seed(4)
    outputs = random_outputs(requires_grad=True)
    criterion = make_criterion()
    losses = criterion(outputs, random_targets([0, 0]))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    assert losses["loss_bbox"].requires_grad and losses["loss_giou"].requires_grad
    assert losses["loss_cls"].item() > 0 and losses["loss_obj"].item() > 0  # everything is background
    criterion.weighted_total(losses).backward()
    assert torch.count_nonzero(outputs["pred_boxes"].grad) == 0
    assert outputs["logits"].grad.abs().sum() > 0


def test_padded_queries_do_not_change_the_loss():
    torch.manual_seed(5)
    targets = random_targets([3, 2], num_queries=5)
    outputs = random_outputs(num_queries=5, requires_grad=True)
    criterion = make_criterion()
    reference = criterion(outputs, targets)
    criterion.weighted_total(reference).backward()

    garbage = torch.full((2, 16, 3), float("nan"))
    garbage[0, :, :2] = 30.0  # confident garbage and NaN on the 3 padded queries
    logits = torch.cat([outputs["logits"].detach(), garbage], dim=-1).requires_grad_(True)  # [B, P, 8]
    query_mask = torch.arange(8)[None, :].expand(2, 8) < 5  # [B, Q]
    padded = dict(outputs, logits=logits, query_mask=query_mask)
    losses = criterion(padded, targets)
    for name in LOSS_NAMES:
        torch.testing.assert_close(losses[name], reference[name])
    criterion.weighted_total(losses).backward()
    torch.testing.assert_close(logits.grad[..., :5], outputs["logits"].grad)
    assert torch.count_nonzero(logits.grad[..., 5:]) == 0


def test_weighted_total_uses_weight_dict():
    torch.manual_seed(6)
    criterion = make_criterion(weight_dict={"loss_cls": 1.5, "loss_giou": 0.5})
    losses = criterion(random_outputs(), random_targets([2, 1]))
    expected = 1.5 * losses["loss_cls"] + 0.5 * losses["loss_giou"]
    torch.testing.assert_close(criterion.weighted_total(losses), expected)
    assert make_criterion().weight_dict == {"loss_cls": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_obj": 1.0}


def test_losses_are_normalised_by_the_number_of_boxes():
    """Duplicating a batch leaves the losses unchanged: sums and box count both double."""
    torch.manual_seed(7)
    outputs, targets = random_outputs(bs=1), random_targets([3])
    criterion = make_criterion()
    single = criterion(outputs, targets)
    doubled = criterion({k: torch.cat([v, v]) for k, v in outputs.items()}, targets * 2)
    for name in LOSS_NAMES:
        torch.testing.assert_close(doubled[name], single[name])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"weight_dict": {"loss_ce": 1.0}}, "unknown losses"), ({"weight_dict": {}}, "empty")],
)
def test_bad_weight_dict_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_criterion(**kwargs)


def test_missing_objectness_raises():
    outputs = random_outputs()
    del outputs["objectness"]
    with pytest.raises(ValueError, match="objectness"):
        make_criterion()(outputs, random_targets([1, 1]))


def _distributed_worker(rank: int, world_size: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(8)
        outputs = random_outputs(bs=1)
        targets = random_targets([4 if rank == 0 else 0])  # 4 boxes on rank 0, none on rank 1
        results[rank] = make_criterion()(outputs, targets)["loss_cls"].item()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_box_count_is_averaged_over_processes(tmp_path):
    """DETR normalisation: each rank divides by the mean count over ranks (here 4 / 2 = 2)."""
    results = mp.Manager().dict()
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "store"), results), nprocs=2)
    torch.manual_seed(8)
    outputs = random_outputs(bs=1)
    local = {0: make_criterion()(outputs, random_targets([4]))["loss_cls"].item() * 4 / 2}
    local[1] = make_criterion()(outputs, random_targets([0]))["loss_cls"].item() / 2  # count 0 -> 1 locally
    assert results[0] == pytest.approx(local[0], rel=1e-5)
    assert results[1] == pytest.approx(local[1], rel=1e-5)
