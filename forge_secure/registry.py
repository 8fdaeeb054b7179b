"""Name registries for variants (accountants, merges, attacks, checks, ...).

Error messages list the allowed names from the registry itself, never by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ForgeValueError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to objects, with an error that lists the known names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ForgeValueError(
                f"unknown {self.kind} {name!r}",
                fix=f"use one of: {', '.join(self.names())}",
                code=f"{self.kind.replace(' ', '_')}.unknown",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
