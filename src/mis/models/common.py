"""What every network family shares: configs that round-trip through a card's JSON, parameter counts."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

C = TypeVar("C", bound="DictConfig")


def _plain(value: Any) -> Any:
    """Tuples (also nested) become lists, the JSON form."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


class DictConfig:
    """Mixin for config dataclasses: `to_dict` gives plain JSON types, `from_dict` refuses unknown keys."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        valid = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**data)


def count_parameters(model, *, trainable_only: bool = False) -> int:
    """Number of parameter elements of an nn.Module (all of them, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
