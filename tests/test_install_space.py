"""`make install`'s disk check: refuses with one line naming the folder and the fix, never blocks a built venv."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "check_install_space.py"


def check(venv: Path, need_gb: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(venv), "--need-gb", str(need_gb)],
                          capture_output=True, text=True)


def test_refuses_a_disk_too_small_for_a_new_venv(tmp_path):
    result = check(tmp_path / "not" / "yet" / ".venv", 1e9)  # more than any disk has
    assert result.returncode == 1
    assert str(tmp_path) in result.stderr and "VENV=" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_passes_when_the_space_is_there(tmp_path):
    result = check(tmp_path / ".venv", 0)
    assert result.returncode == 0 and result.stderr == ""


def test_a_venv_that_has_torch_is_not_checked_again(tmp_path):
    torch_dir = tmp_path / ".venv" / "lib" / "python3.11" / "site-packages" / "torch"
    torch_dir.mkdir(parents=True)
    (torch_dir / "__init__.py").write_text("")
    assert check(tmp_path / ".venv", 1e9).returncode == 0
