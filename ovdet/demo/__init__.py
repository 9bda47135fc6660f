"""The interactive demo (`ovdet demo`): a Gradio page over `ovdet.demo.callbacks`, which need no gradio."""
