# Throwaway check (issue N, a later session on a 2-core Intel Xeon with AMX): run on the one-pass model as it
# shipped before the region classifier (its ovdet/assets/default_model), with data and outputs under /tmp.
"""Train a region classifier on the pooled layer4 map (flattened [C, 2, 2]) -> joint space; CE over the 12 base names."""
import sys, torch
from ovdet.models.detector import Detector

epochs, out, hidden = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
wd = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
neg = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
torch.manual_seed(0)
det = Detector.from_pretrained("ovdet/assets/default_model").eval()
tr, tu = torch.load("/tmp/adapter/train.pt"), torch.load("/tmp/adapter/tune.pt")
names, base = tu["names"], tr["base"]
with torch.inference_mode():
    text = det.encode_queries(names).clone()
scale = det.rescorer.logit_scale
keep = tr["iou"] >= 0.5
x = torch.cat([tr["l4"][keep], tr["gt_l4"]]).float(); y = torch.cat([tr["label"][keep], tr["gt_label"]])
base_idx = torch.tensor([names.index(n) for n in base])
remap = {int(b): i for i, b in enumerate(base_idx)}
y = torch.tensor([remap[int(v)] for v in y])
mu, sd = x.mean(0), x.std(0) + 1e-3
print("train", x.shape)
net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(hidden, text.shape[1]))
def embed(z):
    return torch.nn.functional.normalize(net((z - mu) / sd), dim=-1)
opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=wd)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * ((len(x) + 255) // 256))
tb = text[base_idx]
for ep in range(epochs):
    net.train()
    perm = torch.randperm(len(x)); tot = 0
    for s in range(0, len(x), 256):
        i = perm[s:s + 256]
        loss = torch.nn.functional.cross_entropy(scale * embed(x[i]) @ tb.T, y[i])
        opt.zero_grad(); loss.backward(); opt.step(); sched.step(); tot += float(loss) * len(i)
    print(ep, round(tot / len(x), 4))
net.eval()
torch.save({"net": net.state_dict(), "mu": mu, "sd": sd}, out)
with torch.no_grad():
    for what, l4, emb, lab in [("regions", tu["l4"][tu["iou"] >= 0.5], tu["emb"][tu["iou"] >= 0.5], tu["label"][tu["iou"] >= 0.5]), ("true boxes", tu["gt_l4"], tu["gt_emb"], tu["gt_label"])]:
        isb = torch.isin(lab, base_idx)
        for tag, z in [("raw", emb), ("classifier", embed(l4.float()))]:
            ok = (z @ text.T).argmax(-1) == lab
            okb = (z @ text[base_idx].T).argmax(-1) == torch.tensor([remap.get(int(v), -1) for v in lab])
            print(f"{what:10s} {tag:10s} base {ok[isb].float().mean():.3f} novel {ok[~isb].float().mean():.3f} all {ok.float().mean():.3f} | base among base names {okb[isb].float().mean():.3f}")
