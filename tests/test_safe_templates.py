"""`--templates FILE` that is not a JSON list of templates: one line naming the file, never a traceback."""

import json

import numpy as np
import pytest
from PIL import Image

from ovdet.cli.main import main


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", r"must be a list of strings .* got a list holding int 1"),
        ('{"templates": ["a photo of a {}."]}', r"must be a list of strings .* got a JSON object"),
        ('"a photo of a {}."', r"must be a list of strings .* got a JSON str"),
        ("[]", r"is empty"),
        ('["a photo of a {0}."]', r"contain '\{\}' once.* no other braces: \['a photo of a \{0\}.'\]"),
        ('["{} next to a {}"]', r"contain '\{\}' once"),
        ("[not json", r"is not valid JSON"),
        (None, r"not found"),
    ],
)
def test_bad_template_files_are_one_line(tiny_clip_dir, tmp_path, capsys, content, message):
    import re

    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "im.png")
    templates = tmp_path / "templates.json"
    if content is not None:
        templates.write_text(content)
    code = main(["detect", str(tmp_path / "im.png"), "-q", "cat", "--model", str(tiny_clip_dir),
                 "--templates", str(templates), "--precision", "fp32"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1, err
    assert str(templates) in err[0] and re.search(message, err[0]), err[0]


def test_a_good_template_file_is_used(tiny_clip_dir, tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "im.png")
    (tmp_path / "t.json").write_text(json.dumps(["a photo of a {}.", "{}"]))
    assert main(["detect", str(tmp_path / "im.png"), "-q", "cat", "--model", str(tiny_clip_dir),
                 "--templates", str(tmp_path / "t.json"), "--precision", "fp32"]) == 0  # fmt: skip
