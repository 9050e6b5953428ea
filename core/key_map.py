"""Upstream checkpoint keys -> ours: one rule language, one strict loader, one error.

Every upstream format (MuQ's `muq.pt`, `mucodec.pt` seen from the encoder or from the
decoder, AudioLDM's `audioldm_48k.pth`) has one explicit table, a `KeyMap`, in the module
that loads it (`mucodec.encoder.checkpoint`, `mucodec.decoder.checkpoint`). A table maps
upstream *paths* to ours:

* A path is a module or tensor name (`"conformer.layers.{}.ffn1"`, `"scale_factor"`). It
  covers the key equal to it and every key below it; the rest of the key after the path
  (`".weight"`, `".bias"`, ...) is carried over to the target unchanged.
* `{}` stands for one layer index (a run of digits); the indices fill the target's `{}` in
  order. A literal digit (`"ff.net.0.proj"`) matches only itself.
* A `None` target drops the key: it exists upstream and never influences our model.
* When several paths cover a key, the one covering more of it (the most specific) wins,
  so `"attn1.to_out.0"` can be mapped apart from the rest of `"attn1"`.
* A key no path covers is an error naming it (`CheckpointError`).

`load_strict` then copies a mapped state dict into a module only if every key and shape
agrees, reporting all problems at once: nothing is ever left at its initial value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from torch import Tensor, nn

from core.errors import CheckpointError

__all__ = [
    "CheckpointError",
    "KeyMap",
    "as_tensor_dict",
    "check_state",
    "compare_shapes",
    "invert",
    "load_strict",
    "map_key",
    "map_state",
]

KeyMap = Mapping[str, str | None]
"""Upstream path (with `{}` for a layer index) -> our path, or None to drop."""

_V = TypeVar("_V")
_SHOWN = 10  # Keys listed per kind of problem in an error message.


def _compile(path: str) -> re.Pattern[str]:
    """`"a.{}.b"` -> a regex matching exactly that path, capturing the indices."""
    return re.compile(re.escape(path).replace(r"\{\}", r"(\d+)"))


@functools.lru_cache(maxsize=32)
def _rules(items: tuple[tuple[str, str | None], ...]) -> list[tuple[re.Pattern[str], str | None]]:
    """A table's compiled rules (its items, as a hashable tuple)."""
    return [(_compile(path), target) for path, target in items]


def map_key(key: str, table: KeyMap) -> str | None:
    """Renames one upstream key through `table` (see the module docstring for the rules).

    Args:
        key: An upstream state-dict key, e.g. `"conformer.layers.3.ffn1.output_dense.bias"`.
        table: The format's key map.

    Returns:
        Our key (e.g. `"encoder.blocks.3.ffn1.linear_out.bias"`), or None when the table
        drops it.

    Raises:
        CheckpointError: naming the key when no path of the table covers it.
    """
    rules = _rules(tuple(table.items()))
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        head, rest = ".".join(parts[:end]), "".join("." + p for p in parts[end:])
        for pattern, target in rules:
            match = pattern.fullmatch(head)
            if match is None:
                continue
            if target is None:
                return None
            return target.format(*match.groups()) + rest
    raise CheckpointError(f"no key-map rule covers {key!r}")


def map_state(
    state: Mapping[str, _V],
    table: KeyMap,
    *,
    scope: Iterable[str] | None = None,
    source: str = "checkpoint",
) -> dict[str, _V]:
    """Renames every key of an upstream state dict through `table`.

    Args:
        state: Upstream key -> value (a tensor, or e.g. a shape for checks without weights).
        table: The format's key map.
        scope: Paths this table is responsible for; keys under none of them belong to
            another consumer of the same file and are skipped. None: every key.
        source: Name of the file, for error messages.

    Returns:
        Our key -> value, dropped keys left out.

    Raises:
        CheckpointError: naming every in-scope key no rule covers.
    """
    within = None if scope is None else tuple(scope)
    mapped: dict[str, _V] = {}
    unknown = []
    for key, value in state.items():
        if within is not None and not any(key == p or key.startswith(p + ".") for p in within):
            continue
        try:
            ours = map_key(key, table)
        except CheckpointError:
            unknown.append(key)
            continue
        if ours is not None:
            mapped[ours] = value
    if unknown:
        raise CheckpointError(f"{source}: keys no key-map rule covers: {_listed(unknown)}")
    return mapped


def invert(table: KeyMap) -> dict[str, str]:
    """Our path -> upstream path, for the table's kept (non-None) rules.

    Used to name the upstream key a module of ours expects, e.g. to list the full shape
    manifest of an upstream file from a model built on the meta device.

    Args:
        table: A key map whose kept targets are unique.

    Returns:
        The inverse table, in the same rule language.
    """
    return {target: path for path, target in table.items() if target is not None}


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOWN else ""
    return "[" + ", ".join(keys[:_SHOWN]) + more + "]"


def compare_shapes(
    expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """Every disagreement between two {key: shape} dicts, one line per kind of problem.

    Args:
        expected: What the model (or the upstream format) has.
        given: What the checkpoint has.

    Returns:
        Problems ("missing keys: [...]", "unexpected keys: [...]", "wrong shapes: [...]");
        empty when keys and shapes agree.
    """
    problems = []
    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    wrong = [
        f"{k}: checkpoint {tuple(given[k])} vs model {tuple(expected[k])}"
        for k in set(expected) & set(given)
        if tuple(given[k]) != tuple(expected[k])
    ]
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("wrong shapes", wrong),
    ):
        if items:
            problems.append(f"{title}: {_listed(items)}")
    return problems


def check_state(module: nn.Module, state: Mapping[str, Tensor], source: str = "state") -> None:
    """Refuses a state dict with any missing, unexpected or mis-shaped key for `module`.

    Args:
        module: The model (any device; "meta" is enough).
        state: Our key -> tensor.
        source: Name of the checkpoint, for the message.

    Raises:
        CheckpointError: listing every problem at once.
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = compare_shapes(expected, {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str = "state") -> None:
    """Copies `state` into `module` after `check_state`; the one strict loader of `mucodec`.

    Each tensor is cast to the dtype of the module's own tensor. A module built on the
    meta device gets the tensors assigned (no second copy in memory); otherwise they are
    copied into the existing ones.

    Args:
        module: The model to fill.
        state: Our key -> tensor, exactly the module's keys and shapes.
        source: Name of the checkpoint, for the message.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped key.
    """
    check_state(module, state, source)
    own = module.state_dict()
    is_meta = any(t.is_meta for t in own.values())
    cast = {k: v.to(own[k].dtype) for k, v in state.items()}
    module.load_state_dict(cast, strict=True, assign=is_meta)


def as_tensor_dict(obj: Any, source: str) -> dict[str, Tensor]:
    """A flat {name: tensor} dict, or a `CheckpointError` saying what `obj` is instead.

    Args:
        obj: What an upstream file held at the place weights were expected.
        source: Name of the file, for the message.

    Returns:
        A copy of `obj` as a dict.

    Raises:
        CheckpointError: if `obj` is not a mapping of tensors.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: not a state dict (non-tensor entries {bad[:5]})")
    return dict(obj)
