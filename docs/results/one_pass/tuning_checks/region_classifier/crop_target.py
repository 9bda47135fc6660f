# Throwaway check (issue N, a 2-core AMD EPYC with AVX512-BF16): can the region classifier carry novel names too,
# if next to the base names' cross-entropy it also learns, label-free, the previous CLIP's embedding of each
# region's context crop (CLIPSelf's target, on the one-pass head's own top-32 regions, novel shapes included)?
# Run on the one-pass model with the region classifier (ovdet/assets/default_model); the teacher is the packaged
# CLIP of the previous shipped model (git show fed93df:ovdet/assets/default_model, unpacked to /tmp/oldmodel).
#   python crop_target.py collect /tmp/sw/train3k /tmp/ct/regions.pt
#   python crop_target.py fit /tmp/ct/regions.pt LAMBDA CE(0/1) /tmp/ct/net_L.pt [KL]
#     KL: weight of KL(teacher || classifier) over the 12 base names' softmax on the rows no base box matches
#   python crop_target.py eval /tmp/ct/net_L.pt BASE_SHARE NOVEL_SHARE [/tmp/sw/tune]
"""Label-free crop target for the region classifier: collect, fit, evaluate on the tuning seed."""
import json, sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import box_convert, box_iou

from ovdet.models.detector import Detector

MODEL, TEACHER = "ovdet/assets/default_model", "/tmp/oldmodel/ovdet/assets/default_model"


def collect(root: Path, target: str) -> None:
    det, old = Detector.from_pretrained(MODEL).eval(), Detector.from_pretrained(TEACHER).eval()
    det.set_precision("fp32"); old.set_precision("fp32")
    old.rescorer.context = det.rescorer.context
    data = json.load(open(root / "instances.json"))
    base = sorted({a["category_id"] for a in data["annotations"]})
    names = [c["name"] for c in data["categories"] if c["id"] in base]
    anns = {}
    for a in data["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    q = det.encode_queries(names)
    rec = {"maps": [], "teacher": [], "label": []}
    with torch.inference_mode():
        for s in range(0, len(data["images"]), 8):
            batch = data["images"][s:s + 8]
            px = det.preprocessor.to_model([Image.open(root / "images" / im["file_name"]).convert("RGB") for im in batch])
            out = det(px, q, keep_region_map=True)
            top = out["objectness"].topk(32, dim=1).indices
            boxes = torch.gather(out["pred_boxes"].float(), 1, top[..., None].expand(-1, -1, 4))  # [B, 32, 4]
            maps = det.backbone.region_stage(det.rescorer.pooled_rois(det.backbone, px, boxes, out["region_map"]))
            rec["maps"].append(maps.flatten(1).half())  # [B*32, C*h*w]
            rec["teacher"].append(old.rescorer.crop_embeddings(old.backbone, px, boxes).flatten(0, 1).half())
            for i, im in enumerate(batch):
                label = torch.full((32,), -1)
                a = anns.get(im["id"], [])
                if a:
                    gt = torch.tensor([x["bbox"] for x in a], dtype=torch.float32)
                    gt = det.preprocessor.to_normalized(box_convert(gt, "xywh", "xyxy"), (im["width"], im["height"]))
                    lab = torch.tensor([base.index(x["category_id"]) for x in a])
                    best, arg = box_iou(box_convert(boxes[i], "cxcywh", "xyxy"), gt).max(1)
                    label = torch.where(best >= 0.5, lab[arg], label)
                rec["label"].append(label)
            if s % 400 == 0:
                print(s, flush=True)
    torch.save({k: torch.cat(v) for k, v in rec.items()} | {"names": names}, target)


def fit(path: str, lam: float, ce: float, out: str, kl: float = 0.0, epochs: int = 10) -> None:
    from ovdet.models.region_classifier import RegionClassifier

    det = Detector.from_pretrained(MODEL).eval()
    r = torch.load(path)
    x, teacher, label = r["maps"].float(), F.normalize(r["teacher"].float(), dim=-1), r["label"]
    with torch.inference_mode():
        text = F.normalize(det.encode_queries(r["names"]).float(), dim=-1)
    text = text.clone()  # out of inference mode: autograd saves it
    torch.manual_seed(0)
    net = RegionClassifier(x.shape[1], text.shape[1], 512)
    net.mean.copy_(x.mean(0)); net.std.copy_(x.std(0) + 1e-3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    steps = epochs * -(-len(x) // 256)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    scale = det.rescorer.logit_scale
    print(f"{len(x)} regions, {int((label >= 0).sum())} labelled", flush=True)
    for epoch in range(epochs):
        net.train()
        order, total = torch.randperm(len(x)), 0.0
        for s in range(0, len(x), 256):
            i = order[s:s + 256]
            z = F.normalize(net(x[i]), dim=-1)
            loss = lam * (1 - (z * teacher[i]).sum(-1)).mean()
            lab = label[i] >= 0
            if ce and lab.any():
                loss = loss + ce * F.cross_entropy(scale * z[lab] @ text.T, label[i][lab])
            if kl and (~lab).any():
                target = (scale * teacher[i][~lab] @ text.T).softmax(-1)  # [u, 12] the teacher crop's ranking
                loss = loss + kl * F.kl_div((scale * z[~lab] @ text.T).log_softmax(-1), target, reduction="batchmean")
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            total += float(loss) * len(i)
        print(f"epoch {epoch} loss {total / len(x):.4f}", flush=True)
    torch.save(net.state_dict(), out)


def evaluate(path: str, base_share: float, novel_share: float, tune: Path) -> None:
    from ovdet.evaluation.evaluate import evaluate_model

    det = Detector.from_pretrained(MODEL).eval()
    det.set_precision("fp32")
    if path != "shipped":
        det.region_classifier.load_state_dict(torch.load(path))
    det.set_region_scoring({**det.region_scoring, "classifier_weight": base_share, "novel_classifier_weight": novel_share})
    m = evaluate_model(det, tune / "instances.json", tune / "images", nms=0.5, workers=1, progress=False).metrics
    print(path, base_share, novel_share, {k: round(m[k], 2) for k in ("AP50_novel", "AP50_base", "AP50_all", "AP")}, flush=True)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "collect":
        collect(Path(sys.argv[2]), sys.argv[3])
    elif cmd == "fit":
        fit(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], float(sys.argv[6]) if len(sys.argv) > 6 else 0.0)
    else:
        evaluate(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5] if len(sys.argv) > 5 else "/tmp/sw/tune"))
