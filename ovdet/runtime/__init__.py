"""Runtimes behind one API: the same detector scored by torch, onnxruntime or OpenVINO (`Detector.set_runtime`)."""
