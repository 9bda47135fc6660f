"""Model pieces: vision backbones, text towers, the detection head and the composed Detector."""
