"""YOLO label files carry no mark of their own: the marked labels.meta.json lists their content."""

from pathlib import Path

import pytest

from ovdet.errors import OvdetError
from ovdet.labelling import label_manifest
from ovdet.labelling.formats import check_targets
from ovdet.labelling.label_manifest import is_listed, listed_files, write_listed


def labels(out: Path, *names: str) -> dict[Path, str]:
    return {out / "labels" / f"{n}.txt": f"0 0.5 0.5 0.1 0.{len(n)}\n" for n in names}


def test_a_label_file_edited_by_hand_is_the_users_again(tmp_path):
    write_listed(tmp_path, labels(tmp_path, "a", "bb"))
    check_targets(tmp_path, ["yolo"], ["a.png", "bb.png"], overwrite=False)  # ours: replaced freely
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    with pytest.raises(OvdetError, match="labels/a.txt' \\(yolo\\) exists and was not written by ovdet"):
        check_targets(tmp_path, ["yolo"], ["a.png", "bb.png"], overwrite=False)


def test_a_run_killed_midway_leaves_every_file_recognised(tmp_path, monkeypatch):
    write_listed(tmp_path, labels(tmp_path, "a", "bb"))
    new = {path: text + "0 0.1 0.1 0.1 0.1\n" for path, text in labels(tmp_path, "a", "bb").items()}
    real, calls = label_manifest.atomic_write_text, []

    def killed_after_the_first_label(path, text):
        calls.append(path)
        if path.suffix == ".txt" and len([c for c in calls if c.suffix == ".txt"]) == 2:
            raise KeyboardInterrupt
        return real(path, text)

    monkeypatch.setattr(label_manifest, "atomic_write_text", killed_after_the_first_label)
    with pytest.raises(KeyboardInterrupt):
        write_listed(tmp_path, new)
    listed = listed_files(tmp_path)
    a, bb = tmp_path / "labels" / "a.txt", tmp_path / "labels" / "bb.txt"
    assert a.read_text() == new[a] and bb.read_text() != new[bb]  # one new, one old
    assert is_listed(tmp_path, a, listed) and is_listed(tmp_path, bb, listed)


def test_files_of_an_earlier_run_stay_listed(tmp_path):
    write_listed(tmp_path, labels(tmp_path, "a"))
    write_listed(tmp_path, labels(tmp_path, "bb"))
    listed = listed_files(tmp_path)
    assert set(listed) == {"labels/a.txt", "labels/bb.txt"}
    assert all(is_listed(tmp_path, tmp_path / rel, listed) for rel in listed)
