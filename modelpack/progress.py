"""One progress interface for the whole library.

Library code never prints. Long work reports through a `Progress` object passed in
by the caller; the CLI passes one that draws tqdm bars, tests pass nothing.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None, unit: str = "B") -> contextlib.AbstractContextManager[Task]: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass


class NullProgress:
    """Reports nothing; the default everywhere."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str = "B") -> Iterator[Task]:
        yield _NullTask()


NULL = NullProgress()


def or_null(progress: Progress | None) -> Progress:
    return progress if progress is not None else NULL
