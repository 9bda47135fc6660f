import torch
from torchvision.ops import box_convert

from ovdet.boxes import grid_box_bias, inverse_sigmoid
from ovdet.preprocess import ImagePreprocessor

PAD = ImagePreprocessor(1)  # the resize-and-pad geometry: one factor, max(width, height)


def normalized_to_pixels(boxes, width, height):
    return PAD.to_original(boxes, (width, height))


def pixels_to_normalized(boxes, width, height):
    return PAD.to_normalized(boxes, (width, height))
from ovdet.models.head import DetectionHead


def test_box_conversions_round_trip():
    torch.manual_seed(0)
    xyxy = torch.rand(50, 2, 2).sort(dim=1).values.reshape(50, 4)[:, [0, 2, 1, 3]]  # x0<x1, y0<y1
    back = box_convert(box_convert(xyxy, "xyxy", "cxcywh"), "cxcywh", "xyxy")
    assert torch.allclose(back, xyxy, atol=1e-6)
    pix = normalized_to_pixels(pixels_to_normalized(xyxy * 100, 100, 100), 100, 100)
    assert torch.allclose(pix, xyxy * 100, atol=1e-4)


def test_inverse_sigmoid_inverts_sigmoid():
    x = torch.linspace(0.01, 0.99, 20)
    assert torch.allclose(torch.sigmoid(inverse_sigmoid(x)), x, atol=1e-6)


def test_untrained_head_predicts_each_patch_centre():
    h, w = 3, 5
    head = DetectionHead(token_dim=8, embed_dim=4)
    out = head(torch.randn(2, h * w, 8), (h, w), torch.randn(3, 4))
    boxes = out["pred_boxes"]  # [2, 15, 4] cxcywh
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    assert torch.allclose(boxes[..., 0], xs.flatten().expand(2, -1), atol=1e-3)
    assert torch.allclose(boxes[..., 1], ys.flatten().expand(2, -1), atol=1e-3)
    assert torch.allclose(boxes[..., 2], torch.full((2, h * w), 1 / w), atol=1e-3)
    assert torch.allclose(boxes[..., 3], torch.full((2, h * w), 1 / h), atol=1e-3)
    assert grid_box_bias(h, w).shape == (h * w, 4)


def test_normalized_to_pixels_clips_to_image():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert normalized_to_pixels(boxes, 200, 100).tolist() == [[0.0, 0.0, 200.0, 100.0]]
