"""Makes `flows.approval` importable as the stand-in (flows/approval.py beside this file) only where the real
one is not: a finder appended to the end of sys.meta_path is asked only after the normal import system
has failed, so the repository's flows/approval.py always wins once it exists.

The browser tests put this folder on PYTHONPATH of `streamlit run` (Python imports `sitecustomize` at
startup); the AppTest tests call `install()` / `uninstall()` around each test.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "flows"


class StandIn(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "flows":  # no flows/ package anywhere: the stand-in package
            return importlib.util.spec_from_file_location(
                name, HERE / "__init__.py", submodule_search_locations=[str(HERE)]
            )
        if name == "flows.approval":  # a flows/ package without approval.py (not landed yet)
            return importlib.util.spec_from_file_location(name, HERE / "approval.py")
        return None


def install() -> StandIn:
    finder = StandIn()
    sys.meta_path.append(finder)
    return finder


def uninstall(finder: StandIn) -> None:
    """Remove the finder and every module it made, so later tests import the real flows/ package."""
    sys.meta_path.remove(finder)
    for name in [n for n in sys.modules if n == "flows" or n.startswith("flows.")]:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(HERE)):
            parent, _, child = name.rpartition(".")
            del sys.modules[name]
            if parent in sys.modules and getattr(sys.modules[parent], child, None) is not None:
                delattr(sys.modules[parent], child)


if __name__ == "sitecustomize":  # Python's startup hook (PYTHONPATH=this folder), not an import by path
    install()
