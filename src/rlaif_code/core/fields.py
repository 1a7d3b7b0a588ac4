"""Config fields added after runs were recorded, and how the stored form of a config leaves them out."""

from __future__ import annotations

import dataclasses
from typing import Any


def added_field(default: Any = None, *, default_factory: Any = None) -> Any:
    """A field added to a config after runs were recorded with it: `to_dict` leaves it out while it
    holds its default. The stored config, its hash and the pipeline's fingerprints are then those of
    the config before the field existed, so adding an option does not make finished stages stale."""
    metadata = {"omit_default": True}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def holds_default(cfg: Any, f: dataclasses.Field) -> bool:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return getattr(cfg, f.name) == default
