"""Where the catalogue (templates/) and the license texts (licenses/) live at run time.

In a source checkout or an editable install they sit beside the package; a wheel installs them
under <prefix>/share/modelpack/ (pyproject's data-files). MODELPACK_DATA_DIR overrides both.
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

from modelpack.errors import SourceError


def data_dir(name: str) -> Path:
    """The folder `name` ('templates' or 'licenses'), first found of the places above."""
    candidates = []
    if os.environ.get("MODELPACK_DATA_DIR"):
        candidates.append(Path(os.environ["MODELPACK_DATA_DIR"]) / name)
    candidates.append(Path(__file__).resolve().parent.parent / name)
    candidates.append(Path(sys.prefix) / "share" / "modelpack" / name)
    candidates.append(Path(site.getuserbase()) / "share" / "modelpack" / name)  # pip install --user
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise SourceError(f"modelpack data folder {name!r} not found (looked in {', '.join(map(str, candidates))})")
