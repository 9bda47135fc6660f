"""Text side: the offline CLIP tokenizer, prompt templates, and the cached text encoder."""
