"""Results are written whole or not at all (kill -9, full disk), and never over an input or a non-result file."""

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ovdet.cli.main import main
from ovdet.file_mark import marked
from ovdet.safe_write import atomic_write_bytes, atomic_write_text, atomic_writer

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
OLD = json.dumps(marked({"previous": "metrics"}))  # an earlier metrics.json of ovdet's: it may be replaced
GT = {
    "images": [{"id": i, "file_name": f"{i}.png", "width": 100, "height": 100} for i in range(1, 4)],
    "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
    "annotations": [{"id": i, "image_id": i, "category_id": i % 2 + 1, "bbox": [10, 10, 20, 30], "iscrowd": 0}
                    for i in range(1, 4)],
}  # fmt: skip


@pytest.fixture()
def scored(tmp_path):
    """A ground truth and its own boxes as predictions: `ovdet eval` on them needs no model."""
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
             for a in GT["annotations"]]  # fmt: skip
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    return ["eval", "--annotations", str(tmp_path / "gt.json"), "--predictions", str(tmp_path / "preds.json")]


def test_atomic_write_replaces_whole_files_and_keeps_the_mode(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_text(path, "[1, 2]")
    assert path.read_text() == "[1, 2]" and oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    atomic_write_bytes(path, b"[3]")
    assert path.read_bytes() == b"[3]"
    with pytest.raises(RuntimeError), atomic_writer(path) as f:
        f.write("half a resu")
        raise RuntimeError("the writer failed mid-way")
    assert path.read_bytes() == b"[3]" and sorted(p.name for p in path.parent.iterdir()) == ["out.json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_kill_9_while_writing_leaves_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(OLD)
    code = ("import os, signal\nfrom ovdet.safe_write import atomic_writer\n"
            f"with atomic_writer({str(path)!r}) as f:\n"
            "    f.write('{\"AP\": 1' * 100000); f.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_text() == OLD  # not 0 bytes, not cut off


def _disk_holds(limit: int):
    """A child process that can write at most `limit` bytes per file, as on a nearly full disk."""

    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


def test_full_disk_leaves_the_previous_metrics_and_is_one_line(scored, tmp_path):
    out = tmp_path / "metrics.json"
    assert main([*scored, "--out", str(out)]) == 0
    size = out.stat().st_size
    out.write_text(OLD)
    proc = subprocess.run([sys.executable, "-m", "ovdet.cli.main", *scored, "--out", str(out)], capture_output=True,
                          text=True, env=ENV, timeout=300, preexec_fn=_disk_holds(size // 2))  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"cannot write '{out}'" in errors[0] and "left as it was" in errors[0]
    assert out.read_text() == OLD and sorted(p.name for p in tmp_path.iterdir()) == ["gt.json", "metrics.json",
                                                                                      "preds.json"]


def test_outputs_never_overwrite_an_input_or_a_non_result_file(scored, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(photo)
    photo_bytes = photo.read_bytes()
    gt_text = (tmp_path / "gt.json").read_text()
    cases = [
        (["--out", str(photo)], "--out '.*photo.png' exists and is not a .json file"),
        (["--out", str(tmp_path / "gt.json")], "--out '.*gt.json' is an input of this run"),
        (["--out", str(tmp_path / "preds.json")], "--out '.*preds.json' is an input of this run"),
        (["--out", str(tmp_path)], "is a folder; name a file"),
        (["--report", str(photo)], "--report '.*photo.png' is a file, not a folder"),
    ]
    import re

    for extra, message in cases:
        assert main([*scored, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), err
    # --predictions is written when a model runs: refused before the model is even looked for
    assert main(["eval", "--model", str(tmp_path / "no_such_model"), "--annotations", str(tmp_path / "gt.json"),
                 "--images", str(tmp_path), "--predictions", str(photo)]) == 2  # fmt: skip
    assert "--predictions" in capsys.readouterr().err
    assert photo.read_bytes() == photo_bytes and (tmp_path / "gt.json").read_text() == gt_text


def test_a_report_is_written_atomically_too(scored, tmp_path):
    assert main([*scored, "--report", str(tmp_path / "report")]) == 0
    names = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert "report.md" in names and not [n for n in names if n.endswith(".tmp")]
    assert Path(tmp_path / "report" / "report.md").read_text().splitlines()[1] == "# ovdet evaluation"
