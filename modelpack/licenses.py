"""The license texts modelpack ships (licenses/index.toml) and a lookup by id, SPDX id or alias."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import tomli

from modelpack._data import data_dir
from modelpack.errors import SourceError


@dataclass(frozen=True)
class License:
    id: str
    name: str
    file: Path | None  # None: modelpack does not ship this text
    spdx: str  # SPDX identifier, or a LicenseRef- id when SPDX does not list the license
    spdx_listed: bool = True
    url: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_text(self) -> bool:
        return self.file is not None

    @property
    def text(self) -> str:
        if self.file is None:
            raise SourceError(f"modelpack does not ship the text of {self.name} ({self.id})",
                              hint="give the license text with a LICENSE line in a Modelfile")
        return self.file.read_text(encoding="utf-8")

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "file": None if self.file is None else str(self.file), "spdx": self.spdx,
                "spdx_listed": self.spdx_listed, "url": self.url}


@functools.lru_cache(maxsize=None)
def _load(folder: str) -> tuple[License, ...]:
    root = Path(folder)
    index = root / "index.toml"
    try:
        data = tomli.loads(index.read_text(encoding="utf-8"))
    except tomli.TOMLDecodeError as err:
        raise SourceError(f"cannot parse the license index: {err}", path=str(index)) from None
    out = []
    for row in data.get("license", []):
        path = root / row["file"] if row.get("file") else None
        if path is not None and not path.is_file():
            raise SourceError(f"license {row['id']!r} names a missing file {row['file']!r}", path=str(index))
        out.append(License(id=row["id"], name=row["name"], file=path, spdx=row["spdx"],
                           spdx_listed=row.get("spdx_listed", True), url=row.get("url"),
                           aliases=tuple(row.get("aliases", ()))))
    return tuple(out)


def list_licenses() -> list[License]:
    return list(_load(str(data_dir("licenses"))))


def get_license(license_id: str) -> License:
    """Look a license up by its id, SPDX id or an alias (case-insensitive)."""
    key = license_id.strip().lower()
    for lic in list_licenses():
        if key in {lic.id.lower(), lic.spdx.lower(), *(a.lower() for a in lic.aliases)}:
            return lic
    known = ", ".join(lic.id for lic in list_licenses())
    raise SourceError(f"unknown license {license_id!r}; known: {known}")
