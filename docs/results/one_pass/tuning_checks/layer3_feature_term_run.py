# Throwaway check (issue N, a later session on a 2-core Intel Xeon with AMX). OLD is the model folder shipped before
# the one pass (`git archive 50de415^ ovdet/assets/default_model`): its packaged CLIP is the teacher and its head the
# proposer, as in the shipped recipe's stage 4. 192 steps, then tools/dense_zero_shot.py --scenes 120 --seed 2000.
"""Throwaway check (issue N): add a layer3 feature term to the stage's 1 - cos. The student's RoI-aligned layer3
cells (4 x 4) are pulled toward the teacher's layer3 map of the box's context crop (64 px -> 4 x 4 cells), cell by
cell (1 - cos over channels). FREEZE=1 keeps layer4 and the attention pool at the teacher's weights."""
import os, sys
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ovdet.distill import module as dm
from ovdet.boxes import square_context
from ovdet.distill.region_embedding import crop_images

weight = float(sys.argv[1])
out = sys.argv[2]
freeze = os.environ.get("FREEZE") == "1"
mse = os.environ.get("MSE") == "1"


def distill_loss(self, pixel_values, boxes):
    if self.context > 0:
        boxes = [square_context(b, self.context) for b in boxes]
    t_bb, s_bb = self.teacher.backbone, self.student.backbone
    with torch.no_grad():
        crops = crop_images(pixel_values, boxes, self.teacher.crop_size)
        t_c3 = t_bb.feature_maps(crops)[0]  # [K, C3, 4, 4]
        target = F.normalize(t_bb.pool_region_features(t_c3), dim=-1)
    fmap = s_bb.feature_maps(pixel_values)[0]
    rois = roi_align(fmap, [b.to(fmap) for b in boxes], output_size=self.student.roi_size,
                     spatial_scale=fmap.shape[-1] / pixel_values.shape[-1], sampling_ratio=-1, aligned=True)
    regions = F.normalize(s_bb.pool_region_features(rois), dim=-1)
    cos = (1.0 - F.cosine_similarity(regions, target.to(regions), dim=-1)).mean()
    if mse:
        scale = t_c3.pow(2).mean().sqrt()
        feat = F.mse_loss(rois / scale, t_c3 / scale)
    else:
        feat = (1.0 - F.cosine_similarity(rois, t_c3, dim=1)).mean()
    self.log("train/loss_feat", feat, prog_bar=True)
    return cos + weight * feat


dm.DenseDistillModule.distill_loss = distill_loss
if freeze:
    real = dm.DenseDistillModule.configure_optimizers
    def configure_optimizers(self):
        v = self.student.backbone.vision
        for p in list(v.layer4.parameters()) + list(v.attnpool.parameters()):
            p.requires_grad_(False)
        return real(self)
    dm.DenseDistillModule.configure_optimizers = configure_optimizers
from ovdet.cli.main import main

OLD = "/tmp/old/ovdet/assets/default_model"
sys.exit(main(["train", "experiment=dense_distill", f"model.clip={OLD}/clip",
               f"module.proposals={OLD}", "module.proposal_threshold=0.1",
               "module.max_proposals=12", "data.num_scenes=512", "trainer.max_epochs=3", f"hydra.run.dir={out}",
               *sys.argv[3:]]))
