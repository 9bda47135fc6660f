"""Datasets: the procedural ShapeWorld and readers for COCO-format detection data."""
