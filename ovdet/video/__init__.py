"""Video and streams: decode frames (PyAV), detect in batches through `ovdet.pipeline`, track with ByteTrack,
write per-frame JSON and an annotated video. `detect_video.detect_video` is the one entry point."""
