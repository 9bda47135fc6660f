"""open_clip's `tokenizer.py`, run as this module, so that tokenizing never imports the open_clip package.

That file imports only the standard library, ftfy, regex, numpy and torch, while `import open_clip` costs 3 s on a
2-core CPU (it imports torchvision and transformers), more than torch itself. Running the same file under this
module's name keeps its classes importable by name, so a pickled tokenizer loads in another process. A later
open_clip whose tokenizer file imports the rest of its package (a relative import) raises ImportError here, and
`ovdet.text.tokenizer` imports `open_clip.tokenizer` instead.
"""

import importlib.util
import re
from pathlib import Path

_spec = importlib.util.find_spec("open_clip")
if _spec is None or not _spec.submodule_search_locations:
    raise ImportError("open_clip is not installed")
SOURCE = Path(list(_spec.submodule_search_locations)[0]) / "tokenizer.py"
_code = SOURCE.read_text(encoding="utf-8")
if re.search(r"^\s*from\s+\.", _code, flags=re.MULTILINE):
    raise ImportError(f"{SOURCE} imports the rest of open_clip")
__file__ = str(SOURCE)  # the file finds its BPE table beside itself
exec(compile(_code, str(SOURCE), "exec"), globals())  # noqa: S102  (the installed library's own file)
