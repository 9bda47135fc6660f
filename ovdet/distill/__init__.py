"""Label-free dense distillation (CLIPSelf): a tower's box-pooled dense features taught its own crop embeddings."""
