"""Throwaway check (issue N): the region embedding as the mean of two context squares (ViLD's 1x + 1.5x crops)."""
import sys
import torch
from ovdet.models import region_pool_scorer as rp

CONTEXTS = [float(c) for c in sys.argv[1].split(",")]
real = rp.RegionPoolScorer.region_embeddings
def region_embeddings(self, backbone, pixel_values, boxes, region_map=None):
    saved = self.context
    try:
        parts = []
        for c in CONTEXTS:
            self.context = c
            parts.append(real(self, backbone, pixel_values, boxes, region_map))
    finally:
        self.context = saved
    return torch.nn.functional.normalize(torch.stack(parts).mean(0), dim=-1)
rp.RegionPoolScorer.region_embeddings = region_embeddings
from ovdet.cli.main import main
sys.exit(main(["eval", "--model", "ovdet/assets/default_model", "--annotations", "/tmp/sw/tune/instances.json",
               "--images", "/tmp/sw/tune/images", "--out", f"/tmp/nms/ens_{sys.argv[1]}.json", "--quiet"]))
