"""Name -> object registries: the one place each configurable name is defined.

Where the registries live (one rule): each registry lives beside what it names, in the module that
defines or reads its entries, and holds plain values (builders, loaders, tables):

    registry        module                    entry
    MODELS          scadles.nn.models         builder(input_shape, num_classes, norm, width, groups)
    DATASETS        scadles.data.datasets     DatasetLoader(read, needs_path, default_path)
    PARTITIONS      scadles.data.partition    scheme(labels, k, gen, num_classes=, ...) -> owner
    RATE_PRESETS    scadles.data.rates        Preset(dist, mean, std, values) samples/s
    DISTRIBUTIONS   scadles.data.rates        quantile(u, mean, std) -> rates
    PROFILES        scadles.clock             columns(k, csv) -> per-device profile columns
    COMPRESSORS     scadles.compress.registry factory(ratio=, layers=, shapes=, ...) -> Compressor
    SWITCHES        scadles.compress.switch   builder(SwitchArgs) -> (levels, switch)
    INJECTIONS      scadles.data.injectors    builder(alpha, beta, labels, classes, parts)
    SOURCES         scadles.live.source       factory(SourceSpec) -> LiveSource (brokers lazily)
    POLICIES        scadles.policies          Policy(buffer, compressor, switch, lr_scaling)

None of these modules imports a broker client, so the configuration checks import them and read
the names when a config is validated (not a tuple frozen at import): a name registered after
import is accepted. ``training/build.py`` only looks names up. To add an entry without editing the
package, register it before loading the config::

    >>> from scadles.registry import Registry
    >>> colours = Registry[int]("colour", key="paint.colour")
    >>> _ = colours.register("red", 1)
    >>> colours.get("red"), colours.names(), "blue" in colours
    (1, ('red',), False)
    >>> colours.get("blue")
    Traceback (most recent call last):
    ...
    scadles.errors.UserError: paint.colour: unknown colour 'blue'; known: red

This module imports nothing heavy (no torch, no stage modules), so any module can import it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from scadles.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table; an unknown name is a UserError listing the known names."""

    __slots__ = ("_items", "key", "kind")

    def __init__(self, kind: str, items: Mapping[str, T] | None = None, *, key: str = "") -> None:
        self.kind = kind  # noun in messages: "unknown {kind} 'x'"
        self.key = key or kind  # the config key named in messages by default
        self._items: dict[str, T] = {}
        for name, obj in (items or {}).items():
            self.register(name, obj)

    def register(self, name: str, obj: T) -> T:
        """Add `name`; refuse an empty or duplicate name. Return `obj` (usable as a decorator)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered; unregister it first")
        self._items[name] = obj
        return obj

    def unregister(self, name: str) -> T:
        """Remove `name` and return its entry (tests, or replacing a built-in)."""
        return self._items.pop(self._known(name, None))

    def get(self, name: str, key: str | None = None) -> T:
        """Return the entry of `name`, or raise UserError naming `key` and the known names."""
        return self._items[self._known(name, key)]

    def names(self) -> tuple[str, ...]:
        """Return the registered names in registration order."""
        return tuple(self._items)

    def items(self) -> tuple[tuple[str, T], ...]:
        """Return the (name, entry) pairs in registration order."""
        return tuple(self._items.items())

    def _known(self, name: str, key: str | None) -> str:
        if name not in self._items:
            known = ", ".join(self._items)
            raise UserError(f"{key or self.key}: unknown {self.kind} {name!r}; known: {known}")
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
