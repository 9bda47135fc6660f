# Throwaway check (issue N, a later session on a 2-core Intel Xeon with AMX): run on the one-pass model as it
# shipped before the region classifier (its ovdet/assets/default_model), with data and outputs under /tmp.
"""Train a residual adapter on pooled region embeddings: CE over the 12 base names' text embeddings."""
import sys, torch
from ovdet.models.detector import Detector

kind, epochs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
wd = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-4
torch.manual_seed(0)
det = Detector.from_pretrained("ovdet/assets/default_model").eval()
tr, tu = torch.load("/tmp/adapter/train.pt"), torch.load("/tmp/adapter/tune.pt")
names, base = tu["names"], tr["base"]
with torch.inference_mode():
    text = det.encode_queries(names).clone()  # [16, E] clip7
scale = det.rescorer.logit_scale
keep = tr["iou"] >= 0.5
x = torch.cat([tr["emb"][keep], tr["gt_emb"]]); y = torch.cat([tr["label"][keep], tr["gt_label"]])
base_idx = torch.tensor([names.index(n) for n in base])
remap = {int(b): i for i, b in enumerate(base_idx)}
y = torch.tensor([remap[int(v)] for v in y])
print("train", x.shape, "classes", y.bincount())
e = x.shape[1]
if kind == "linear":
    net = torch.nn.Linear(e, e); torch.nn.init.zeros_(net.weight); torch.nn.init.zeros_(net.bias)
else:
    net = torch.nn.Sequential(torch.nn.Linear(e, 256), torch.nn.GELU(), torch.nn.Linear(256, e))
    torch.nn.init.zeros_(net[2].weight); torch.nn.init.zeros_(net[2].bias)
def adapt(z):
    return torch.nn.functional.normalize(z + net(z), dim=-1)
opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=wd)
tb = text[base_idx]
for ep in range(epochs):
    perm = torch.randperm(len(x))
    for s in range(0, len(x), 256):
        i = perm[s:s + 256]
        loss = torch.nn.functional.cross_entropy(scale * adapt(x[i]) @ tb.T, y[i])
        opt.zero_grad(); loss.backward(); opt.step()
    print(ep, float(loss))
torch.save(net.state_dict(), out)
# naming accuracy on the tuning seed's regions that overlap a true box (IoU >= 0.5) and its true boxes, over all 16 names
with torch.no_grad():
    for what, emb, lab in [("regions", tu["emb"][tu["iou"] >= 0.5], tu["label"][tu["iou"] >= 0.5]), ("true boxes", tu["gt_emb"], tu["gt_label"])]:
        isb = torch.isin(lab, base_idx)
        for tag, z in [("raw", emb), ("adapted", adapt(emb))]:
            pred = (z @ text.T).argmax(-1)
            ok = pred == lab
            print(f"{what:10s} {tag:8s} base {ok[isb].float().mean():.3f} novel {ok[~isb].float().mean():.3f} all {ok.float().mean():.3f}")
