# Throwaway check (issue N, a later session on a 2-core Intel Xeon with AMX): run on the one-pass model as it
# shipped before the region classifier (its ovdet/assets/default_model), with data and outputs under /tmp.
"""Tuning-seed AP with the adapter ensembled into region scoring: p = p_raw^(1-g) * p_adapted^g (g per base/novel)."""
import sys, json, torch
from ovdet.models import region_pool_scorer as rp, crop_rescorer as cr
from ovdet.models.head import MASKED_LOGIT

kind, path, g_base, g_novel = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
w_base, w_novel = (float(sys.argv[5]), float(sys.argv[6])) if len(sys.argv) > 6 else (None, None)
e = 128
if kind == "l4":
    ck = torch.load(path)
    net = torch.nn.Sequential(torch.nn.Linear(2048, 512), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(512, e))
    net.load_state_dict(ck["net"]); mu, sd = ck["mu"], ck["sd"]
elif kind == "linear":
    net = torch.nn.Linear(e, e)
else:
    net = torch.nn.Sequential(torch.nn.Linear(e, 256), torch.nn.GELU(), torch.nn.Linear(256, e))
if kind != "l4":
    net.load_state_dict(torch.load(path))
net.eval()
from torchvision.ops import roi_align

@torch.no_grad()
def call(self, backbone, pixel_values, outputs, query_embeds, reference_embeds=None, region_map=None):
    if w_base is not None:
        self.weight, self.novel_weight = w_base, w_novel
    boxes, objectness = outputs["pred_boxes"].float(), outputs["objectness"].float()
    b, p, _ = boxes.shape
    k = min(self.topk, p)
    top = objectness.topk(k, dim=1).indices
    chosen = torch.gather(boxes, 1, top[..., None].expand(-1, -1, 4))
    if kind == "l4":
        rois = self.context_rois(chosen, pixel_values.shape[-1])
        size = backbone.region_roi_size
        pooled = roi_align(region_map.float(), rois, output_size=(size, size), spatial_scale=region_map.shape[-1] / pixel_values.shape[-1], sampling_ratio=-1, aligned=True)
        l4 = backbone.vision.layer4(pooled)
        raw = torch.nn.functional.normalize(backbone.global_embedding(l4).float(), dim=-1)
        ad = torch.nn.functional.normalize(net((l4.flatten(1).float() - mu) / sd), dim=-1)
    else:
        raw = self.region_embeddings(backbone, pixel_values, chosen, region_map).flatten(0, 1)
        ad = torch.nn.functional.normalize(raw + net(raw), dim=-1)
    q = query_embeds.shape[0]
    weight = torch.full((q,), self.novel_weight); g = torch.full((q,), g_novel)
    probs = []
    for z in (raw, ad):
        logits = self.logit_scale * z @ query_embeds.float().T
        if reference_embeds is not None:
            reference = reference_embeds.to(query_embeds).float()
            same = (reference @ query_embeds.float().T) > cr.DUPLICATE_COSINE
            ref_logits = (self.logit_scale * z @ reference.T).masked_fill(same.any(-1), float("-inf"))
            logits = torch.cat([logits, ref_logits], dim=-1)
        probs.append(logits.softmax(-1)[:, :q].reshape(b, k, q))
    if reference_embeds is not None:
        isbase = same.any(0)
        weight = torch.where(isbase, self.weight, weight); g = torch.where(isbase, g_base, g)
    pr = probs[0] ** (1 - g) * probs[1] ** g
    obj = torch.gather(objectness, 1, top).sigmoid()[..., None]
    score = (obj ** (1 - weight) * pr ** weight).clamp(1e-6, 1 - 1e-6)
    logits = torch.full((b, p, q), MASKED_LOGIT)
    logits.scatter_(1, top[..., None].expand(-1, -1, q), torch.logit(score))
    return logits
rp.RegionPoolScorer.__call__ = call
from ovdet.cli.main import main
tag = "_".join(sys.argv[1:]).replace("/", "-")
out = f"/tmp/adapter/ap_{tag}.json"
rc = main(["eval", "--model", "ovdet/assets/default_model", "--annotations", sys.argv[7] if len(sys.argv) > 7 else "/tmp/sw/tune/instances.json",
           "--images", (sys.argv[8] if len(sys.argv) > 8 else "/tmp/sw/tune/images"), "--out", out, "--quiet"])
m = json.load(open(out))
print(tag, {k: round(v, 2) for k, v in m.items() if isinstance(v, (int, float)) and ("AP50" in k or k == "AP")})
