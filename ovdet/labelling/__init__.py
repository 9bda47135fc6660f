"""`ovdet label`: detections written as an annotation dataset (COCO, YOLO, Pascal VOC, Label Studio)."""
