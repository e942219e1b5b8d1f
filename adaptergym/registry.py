"""One generic name -> factory registry for policies, scenarios and profiles."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from adaptergym.errors import UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps plain string names to factories; unknown names get a "did you mean" suggestion."""

    def __init__(self, kind: str, error: type[UnknownName] = UnknownName) -> None:
        self.kind = kind
        self._error = error
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@registry.register("greedy")`` on a class or function."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory for ``name`` or raise with the closest registered names."""
        try:
            return self._factories[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._factories, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise self._error(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._factories))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
