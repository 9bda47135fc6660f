"""Contrastive CLIP pretraining from scratch on ShapeWorld image-text pairs, with zero-shot evaluation."""
