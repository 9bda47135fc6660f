"""Every short command the README shows runs as written (from the repository root, as a user on a fresh clone)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Commands naming files a user brings (photo.jpg, MODEL_DIR, COCO) cannot run as written here; long ones run elsewhere:
# the train commands in tests/test_train_cli.py, `make test` is this suite, the demo is a server.
PLACEHOLDERS = ("photo.jpg", "MODEL_DIR", " DIR", "my-detector", "instances_val2017", "lvis_v1_val", "/data",
                ".../", "ovcoco", "experiment=", "--num-images 8000", "pretrain_clip", "embedded-model", "make demo",
                "make test")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()  # trailing comments
            if line.startswith(("ovdet ", "make ")) and not any(p in line for p in PLACEHOLDERS):
                commands.append(line)
    return commands


def test_the_readme_shows_runnable_commands():
    commands = readme_commands()
    assert "make detect" in commands and any(c.startswith("ovdet eval") for c in commands)
    for start in ("ovdet label ", "ovdet index ", "ovdet search ", "ovdet detect clip.mp4 "):  # each workflow runs here
        assert any(c.startswith(start) for c in commands), start
    assert any("--runtime onnxruntime" in c for c in commands) and readme_tool_line("make_moving_shapes.py")


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A folder that looks like a fresh clone's root (the package, Makefile and venv linked in), so that the
    commands' outputs (data/, out/) never touch the developer's own."""
    root = tmp_path_factory.mktemp("clone")
    for name in ("ovdet", "Makefile", "pyproject.toml", "tools", "conf", ".venv"):
        if (ROOT / name).exists():
            (root / name).symlink_to(ROOT / name)
    return root


def readme_tool_line(script: str) -> str:
    """The README's `python tools/SCRIPT ...` line (not run by itself here: see `_make_what_it_reads`)."""
    text = (ROOT / "README.md").read_text()
    lines = (re.sub(r"\s+#.*$", "", line).strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in block.splitlines())
    return next(line for line in lines if line.startswith(f"python tools/{script} "))


def _make_what_it_reads(argv: list[str], clone: Path, env: dict) -> None:
    """A command run alone first gets what the README's line before it makes: eval its ShapeWorld set, search
    its index, a video detect its clip."""
    command = argv[3:5]
    if command[:1] == ["eval"] and not (clone / "data" / "sw_quick").is_dir():
        prior = next(c for c in readme_commands() if "data/sw_quick --num" in c)
    elif command[:1] == ["search"] and not (clone / command[1]).exists():
        prior = next(c for c in readme_commands() if c.startswith("ovdet index ") and f"--out {command[1]}" in c)
    elif command[:1] == ["detect"] and command[1].endswith(".mp4") and not (clone / command[1]).exists():
        prior = readme_tool_line("make_moving_shapes.py")
    else:
        return
    subprocess.run([sys.executable, *(["-m", "ovdet.cli.main"] if prior.startswith("ovdet ") else []),
                    *shlex.split(prior)[1:]], cwd=clone, env=env, check=True, capture_output=True, timeout=300)


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs_as_written(command, clone):
    if not (ROOT / "ovdet" / "assets" / "default_model" / "config.json").is_file():
        pytest.skip("no embedded model shipped")
    argv = shlex.split(command)
    if argv[0] == "ovdet":
        argv = [sys.executable, "-m", "ovdet.cli.main", *argv[1:]]
    elif shutil.which("make") is None or not (ROOT / ".venv").is_dir():
        pytest.skip("make detect needs make and the project's .venv")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    _make_what_it_reads(argv, clone, env)
    proc = subprocess.run(argv, cwd=clone, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr


def test_install_lines_work_from_a_clone_and_the_download_rule_is_stated_once():
    """ovdet is on no package index: every `pip install ...ovdet` line installs the clone (`-e .`), and the
    README never says "nothing is ever downloaded" next to the OVDET_ALLOW_DOWNLOAD opt-in."""
    text = (ROOT / "README.md").read_text()
    assert not re.search(r"pip install\s+['\"]?ovdet", text), "pip install 'ovdet[...]' cannot work: say -e '.[...]'"
    assert "OVDET_ALLOW_DOWNLOAD=1" in text and not re.search(r"nothing is ever downloaded", text, re.I)


def _detections(argv: list[str], clone: Path, out: str) -> list[dict]:
    import json

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "ovdet.cli.main", *argv[1:], "--out", out, "--quiet"], cwd=clone,
                   env=env, check=True, capture_output=True, timeout=300)
    return json.loads((clone / out).read_text())[0]["detections"]


def test_the_negative_example_removes_what_it_says(clone):
    """The README's --negative example must show something: without the negative it finds more boxes."""
    if not (ROOT / "ovdet" / "assets" / "default_model" / "config.json").is_file():
        pytest.skip("no embedded model shipped")
    command = next(c for c in readme_commands() if "--negative" in c)
    argv = shlex.split(command)
    i = argv.index("--negative")
    with_negative = _detections(argv, clone, "neg_with.json")
    without = _detections(argv[:i] + argv[i + 2:], clone, "neg_without.json")
    assert 0 < len(with_negative) < len(without)


def test_the_onnx_post_processing_example_gives_ovdet_detects_detections(clone):
    """README's ONNX section: run its export command, then its Python block; the detections equal
    `Detector.detect`'s on the same image and queries."""
    pytest.importorskip("onnxruntime")
    if not (ROOT / "ovdet" / "assets" / "default_model" / "config.json").is_file():
        pytest.skip("no embedded model shipped")
    text = (ROOT / "README.md").read_text()
    command = next(c for c in readme_commands() if c.startswith("ovdet export"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "ovdet.cli.main", *shlex.split(command)[1:], "--no-check"], cwd=clone,
                   env=env, check=True, capture_output=True, timeout=600)
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "InferenceSession" in b)
    cwd = os.getcwd()
    try:
        os.chdir(clone)
        scope: dict = {}
        exec(block, scope)  # noqa: S102 - the README's own example
    finally:
        os.chdir(cwd)
    queries = [a for i, a in enumerate(shlex.split(command)) if i and shlex.split(command)[i - 1] == "-q"]
    expected = scope["detector"].detect(scope["image"], queries, threshold=0.5)[0]
    dets = scope["dets"]
    assert len(expected) == len(dets["scores"]) > 0
    for det, box, score, label in zip(expected, dets["boxes"], dets["scores"], dets["labels"]):
        assert det.label == int(label) and abs(det.score - float(score)) < 1e-4
        assert max(abs(a - float(b)) for a, b in zip(det.box, box)) < 0.05
