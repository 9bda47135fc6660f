"""`ovdet benchmark`: ovdet against transformers' OwlViT on the same ViT, in one run, side by side."""
