# Throwaway check (issue N, a later session on a 2-core Intel Xeon with AMX): run on the one-pass model as it
# shipped before the region classifier (its ovdet/assets/default_model), with data and outputs under /tmp.
"""Pool the shipped model's top-32 regions (and the true boxes) on base-annotated training scenes."""
import json, sys, torch
from pathlib import Path
from PIL import Image
from torchvision.ops import box_convert, box_iou
from ovdet.models.detector import Detector

root, out_path, limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
det = Detector.from_pretrained("ovdet/assets/default_model").eval()
det.set_precision("fp32")
data = json.load(open(root / "instances.json"))
cats = {c["id"]: c["name"] for c in data["categories"]}
base = [c["name"] for c in data["categories"] if c.get("split") == "base"]
names = [c["name"] for c in data["categories"]]
anns = {}
for a in data["annotations"]:
    anns.setdefault(a["image_id"], []).append(a)
images = data["images"][:limit]
q = det.encode_queries(base)
rec = {"l4": [], "gt_l4": [], "emb": [], "label": [], "iou": [], "obj": [], "gt_emb": [], "gt_label": []}
from torchvision.ops import roi_align
def l4emb(px, boxes, rmap):
    b, k, _ = boxes.shape
    rois = det.rescorer.context_rois(boxes, px.shape[-1])
    size = det.backbone.region_roi_size
    pooled = roi_align(rmap.float(), rois, output_size=(size, size), spatial_scale=rmap.shape[-1] / px.shape[-1], sampling_ratio=-1, aligned=True)
    l4 = det.backbone.vision.layer4(pooled)
    emb = torch.nn.functional.normalize(det.backbone.global_embedding(l4).float(), dim=-1)
    return emb.view(b, k, -1), l4.flatten(1).view(b, k, -1).half()
with torch.inference_mode():
    for s in range(0, len(images), 16):
        batch = images[s:s + 16]
        pils = [Image.open(root / "images" / im["file_name"]).convert("RGB") for im in batch]
        px = det.preprocessor.to_model(pils)
        out = det(px, q, keep_region_map=True)
        rmap = out["region_map"]
        obj = out["objectness"]
        top = obj.topk(32, dim=1).indices
        boxes = torch.gather(out["pred_boxes"], 1, top[..., None].expand(-1, -1, 4))
        emb, l4 = l4emb(px, boxes, rmap)  # [B,32,E], [B,32,F]
        for i, im in enumerate(batch):
            a = anns.get(im["id"], [])
            size = (im["width"], im["height"])
            if a:
                gt = torch.tensor([x["bbox"] for x in a], dtype=torch.float32)
                gt = det.preprocessor.to_normalized(box_convert(gt, "xywh", "xyxy"), size)
                labels = torch.tensor([names.index(cats[x["category_id"]]) for x in a])
                iou = box_iou(box_convert(boxes[i], "cxcywh", "xyxy"), gt)  # [32, G]
                best, arg = iou.max(1)
                rec["iou"].append(best); rec["label"].append(labels[arg])
                gemb, gl4 = l4emb(px[i:i+1], box_convert(gt, "xyxy", "cxcywh")[None], rmap[i:i+1])
                rec["gt_emb"].append(gemb[0]); rec["gt_label"].append(labels); rec["gt_l4"].append(gl4[0])
            else:
                rec["iou"].append(torch.zeros(32)); rec["label"].append(torch.full((32,), -1))
            rec["emb"].append(emb[i]); rec["l4"].append(l4[i]); rec["obj"].append(torch.gather(obj[i], 0, top[i]).sigmoid())
        if s % 320 == 0:
            print(s, flush=True)
torch.save({k: torch.cat(v) for k, v in rec.items()} | {"base": base, "names": names}, out_path)
