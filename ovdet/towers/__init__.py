"""CLIP towers: dense vision backbones and text towers, one file per kind, and the loader that builds them."""
