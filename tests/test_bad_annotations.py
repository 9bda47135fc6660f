"""Dirty COCO jsons: cleaned with one counted warning, or refused with one message naming the file and record."""

import copy
import json

import pytest
import torch
from PIL import Image

from ovdet.data.coco_detection import CocoDetection
from ovdet.data.transforms import build_transform
from ovdet.preprocess import OPENAI_MEAN, OPENAI_STD

S = 64


def _transform():
    return build_transform(S, OPENAI_MEAN, OPENAI_STD, None)


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (100, 80), (120, 120, 120)).save(tmp_path / "images" / name)
    return tmp_path


CLEAN = {
    "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80},
               {"id": 2, "file_name": "b.png", "width": 100, "height": 80}],
    "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 0},
                    {"id": 2, "image_id": 2, "category_id": 2, "bbox": [30, 30, 20, 20], "iscrowd": 0}],
}


def write(folder, data) -> str:
    path = folder / "instances.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def dirty_annotations() -> list:
    good = {"image_id": 1, "category_id": 1, "iscrowd": 0}
    return [
        {**good, "id": 10, "bbox": [90, 70, 30, 30]},  # sticks out: clipped to [90, 70, 100, 80]
        {**good, "id": 11, "bbox": [200, 10, 20, 20]},  # wholly outside the image
        {**good, "id": 12, "bbox": [10, 10, 0, 20]},  # zero area
        {**good, "id": 13, "bbox": [10, 10, -5, 20]},  # negative width
        {**good, "id": 14},  # no bbox
        {**good, "id": 15, "bbox": "10,10,5,5"},  # not a list
        {**good, "id": 16, "bbox": [10, 10, float("nan"), 5]},  # NaN
        {"id": 17, "image_id": 1, "bbox": [1, 1, 5, 5]},  # no category_id
        {"id": 18, "category_id": 1, "bbox": [1, 1, 5, 5]},  # no image_id
        "not an annotation",
        {**good, "id": 19, "category_id": 99, "bbox": [1, 1, 5, 5]},  # unknown category
        {**good, "id": 20, "image_id": 42, "bbox": [1, 1, 5, 5]},  # unknown image
        {**good, "bbox": [40, 40, 10, 10]},  # no id: gets one
        {**good, "id": 1, "bbox": [50, 10, 10, 10]},  # repeats annotation id 1: gets a new one
    ]


def test_dirty_annotations_are_cleaned_with_one_counted_warning(folder):
    data = copy.deepcopy(CLEAN)
    data["annotations"] += dirty_annotations()
    path = write(folder, data)
    with pytest.warns(UserWarning) as record:
        ds = CocoDetection(path, folder / "images", _transform())
    messages = [str(w.message) for w in record if "instances.json" in str(w.message)]
    assert len(messages) == 1
    assert "clipped 1 boxes" in messages[0] and "dropped 11" in messages[0]
    for part in ("2 degenerate", "1 outside the image", "6 malformed", "2 unknown image or category",
                 "gave 2 annotations a new unique id"):
        assert part in messages[0], messages[0]
    first = next(r for r in ds.records if r.image_id == 1)
    assert len(first.boxes) == 4  # the clean box, the clipped one and the two re-numbered ones
    assert [90.0, 70.0, 100.0, 80.0] in first.boxes.tolist()
    ann_ids = [a["id"] for a in ds.coco.dataset["annotations"]]
    assert len(ann_ids) == len(set(ann_ids))  # evaluation sees every box once
    for i in range(len(ds)):
        boxes = ds[i]["boxes_cxcywh"]
        assert torch.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= 1).all()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: [d], "holds a JSON list"),
        (lambda d: {**d, "images": None}, "no 'images' list"),
        (lambda d: {k: v for k, v in d.items() if k != "categories"}, "no 'categories' list"),
        (lambda d: {**d, "annotations": {"1": {}}}, "'annotations' must be a list"),
        (lambda d: {**d, "images": [{"file_name": "a.png"}]}, r"images\[0\] has no integer 'id'"),
        (lambda d: {**d, "images": [{"id": "1", "file_name": "a.png"}]}, r"images\[0\] has no integer 'id'"),
        (lambda d: {**d, "images": [{"id": 1}]}, "image 1 has neither 'file_name' nor 'coco_url'"),
        (lambda d: {**d, "images": [{"id": 1, "file_name": "a.png", "width": 0, "height": 80}]}, "width=0"),
        (lambda d: {**d, "images": d["images"] + [{"id": 1, "file_name": "b.png"}]},
         r"image id 1 is used by images\[0\] and images\[2\]"),
        (lambda d: {**d, "categories": d["categories"] + [{"id": 1, "name": "star"}]}, "category id 1 is used twice"),
        (lambda d: {**d, "categories": d["categories"] + [{"id": 3, "name": "square"}]},
         "category name 'square' is used twice"),
        (lambda d: {**d, "categories": [{"id": 1}]}, r"categories\[0\] needs an integer 'id' and a 'name'"),
    ],
)
def test_untrustworthy_json_is_refused_naming_the_record(folder, mutate, message):
    path = write(folder, mutate(copy.deepcopy(CLEAN)))
    with pytest.raises(ValueError, match=message) as err:
        CocoDetection(path, folder / "images", _transform())
    assert str(path) in str(err.value)


def test_missing_image_files_are_refused_up_front(folder):
    data = copy.deepcopy(CLEAN)
    data["images"][1]["file_name"] = "gone.png"
    path = write(folder, data)
    with pytest.raises(ValueError, match=r"1 of 2 images .* are not under .*gone\.png"):
        CocoDetection(path, folder / "images", _transform())


def test_clean_json_gives_no_warning(folder, recwarn):
    ds = CocoDetection(write(folder, CLEAN), folder / "images", _transform())
    assert len(ds) == 2 and not [w for w in recwarn if "instances.json" in str(w.message)]
