"""Throwaway check (issue N): class-agnostic NMS on objectness before the top-k regions are named."""
import json, sys
import torch
from torchvision.ops import box_convert, nms
from ovdet.models import crop_rescorer as cr
from ovdet.models.head import MASKED_LOGIT

IOU, TOPK = float(sys.argv[1]), int(sys.argv[2])
orig_topk = torch.Tensor.topk

def select(boxes, objectness, k):
    xyxy = box_convert(boxes, "cxcywh", "xyxy")
    rows = []
    for b in range(boxes.shape[0]):
        keep = nms(xyxy[b], objectness[b], IOU)[:k]
        if len(keep) < k:
            order = objectness[b].argsort(descending=True)
            rest = order[~torch.isin(order, keep)][: k - len(keep)]
            keep = torch.cat([keep, rest])
        rows.append(keep)
    return torch.stack(rows)

real_call = cr.CropRescorer.__call__
def call(self, backbone, pixel_values, outputs, query_embeds, reference_embeds=None, region_map=None):
    boxes, objectness = outputs["pred_boxes"].float(), outputs["objectness"].float()
    k = min(TOPK, boxes.shape[1])
    chosen_idx = select(boxes, objectness, k)
    class Obj:  # make objectness.topk return our indices
        pass
    saved = self.topk
    self.topk = k
    def fake_topk(t, kk, dim=1, *a, **kw):
        if t.shape == objectness.shape and kk == k:
            return torch.return_types.topk((torch.gather(t, 1, chosen_idx), chosen_idx))
        return orig_topk(t, kk, dim, *a, **kw)
    torch.Tensor.topk = fake_topk
    try:
        return real_call(self, backbone, pixel_values, outputs, query_embeds, reference_embeds, region_map)
    finally:
        torch.Tensor.topk = orig_topk
        self.topk = saved
cr.CropRescorer.__call__ = call

from ovdet.cli.main import main
sys.exit(main(["eval", "--model", "ovdet/assets/default_model", "--annotations", "/tmp/sw/tune/instances.json",
               "--images", "/tmp/sw/tune/images", "--out", f"/tmp/nms/eval_{IOU}_{TOPK}.json", "--quiet"] + sys.argv[3:]))
