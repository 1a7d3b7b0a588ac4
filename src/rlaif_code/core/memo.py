"""What is built once per live object (a tokenizer, an API database's matcher) and forgotten with it."""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def once_per_object(build: Callable[[Any], T]) -> Callable[[Any], T]:
    """`build(owner)` computed once per live owner and forgotten with it: what is built from a
    tokenizer scans its whole vocabulary (seconds for SmolLM2's 49k tokens), what is built from an
    API database parses every call in it."""
    built: "weakref.WeakKeyDictionary[Any, T]" = weakref.WeakKeyDictionary()

    @functools.wraps(build)
    def for_owner(owner: Any) -> T:
        value = built.get(owner)
        if value is None:
            value = built[owner] = build(owner)
        return value

    return for_owner
