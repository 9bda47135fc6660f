"""Throwaway check (issue N, 'untried'): the stage's 1 - cos plus a KL term on the teacher's ranking over the 12
BASE names (never the novel ones), 192 steps as the other tuning-seed checks. Calls the same ovdet code."""
import sys
import torch
import torch.nn.functional as F

from ovdet.models.detector import Detector
from ovdet.distill import module as dm
from ovdet.boxes import square_context

BASE = ["circle", "square", "triangle", "hexagon", "cross", "ring", "pentagon", "diamond", "ellipse", "trapezoid",
        "octagon", "semicircle"]
weight = float(sys.argv[1])
out = sys.argv[2]
names = Detector.from_pretrained("artifacts/embedded/runs/detector/detector").encode_queries(BASE, "clip7").float().detach()
SCALE = 23.48


def distill_loss(self, pixel_values, boxes):
    if self.context > 0:
        boxes = [square_context(b, self.context) for b in boxes]
    with torch.no_grad():
        target = dm.crop_embeddings(self.teacher, pixel_values, boxes)
    regions = dm.dense_region_embeddings(self.student, pixel_values, boxes)
    cos = (1.0 - F.cosine_similarity(regions, target.to(regions), dim=-1)).mean()
    t = SCALE * F.normalize(target.float(), dim=-1) @ names.T
    s = SCALE * F.normalize(regions.float(), dim=-1) @ names.T
    kl = F.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean")
    return cos + weight * kl


dm.DenseDistillModule.distill_loss = distill_loss
from ovdet.cli.main import main

sys.exit(main(["train", "experiment=dense_distill", "model.clip=artifacts/embedded/clip",
               "module.proposals=artifacts/embedded/runs/detector/detector", "module.proposal_threshold=0.1",
               "module.max_proposals=12", "data.num_scenes=512", "trainer.max_epochs=3", f"hydra.run.dir={out}",
               *sys.argv[3:]]))  # later overrides win: the shipped 1024 steps are data.num_scenes=4096 trainer.max_epochs=2
