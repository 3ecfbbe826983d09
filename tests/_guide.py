"""docs/ARCHITECTURE.md's "Add a ..." guides, run literally by the tests that follow them: a guide's python blocks
(step 1, the module; step 2, the registration), the module written to a temporary directory on ``sys.path`` in
place of ``src/``, so that following a guide touches no file of the package."""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"


def guide_blocks(section: str) -> list[str]:
    """The python blocks of the section ``## {section}``, dedented."""
    text = GUIDE.read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return [re.sub(r"(?m)^   ", "", b) for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)]


@contextlib.contextmanager
def follow_guide(section: str, module_name: str, where: Path, names: tuple[str, ...]) -> Iterator[ModuleType]:
    """Step 1 as ``where/module_name.py`` (imported), then step 2 run with ``names`` of the module in scope."""
    step1, step2 = guide_blocks(section)
    (where / f"{module_name}.py").write_text(step1)
    sys.path.insert(0, str(where))
    try:
        module = importlib.import_module(module_name)
        exec(step2, {n: getattr(module, n) for n in names})
        yield module
    finally:
        sys.modules.pop(module_name, None)
        sys.path.remove(str(where))
