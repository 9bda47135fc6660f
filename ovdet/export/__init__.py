"""Export a detector to other runtimes (ONNX)."""
