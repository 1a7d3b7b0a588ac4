"""Extract Gorilla's five answer fields from any model output.

Models drop fields, reorder them, repeat them, stop mid-field, or answer in
TorchHub's dict style (`{'domain': ..., 'api_call': ...}`). The parser anchors on
field markers wherever they are; the first occurrence of a field wins, and a value
runs until the next marker (of any field) or a new `###Instruction`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FIELDS = ("domain", "api_call", "provider", "explanation", "code")

# Marker spellings -> field. `api_provider` is Gorilla's name for the provider field.
_ALIASES = {"domain": "domain", "api_call": "api_call", "api_provider": "provider", "provider": "provider",
            "explanation": "explanation", "code": "code"}

_ANGLE_RE = re.compile(r"<<<\s*(domain|api_call|api_provider|explanation|code)\s*>>>\s*:?", re.I)
_DICT_RE = re.compile(r"""(?:^|[{,\s])['"](domain|api_call|api_provider|explanation|code)['"]\s*:""")
_STOP_RE = re.compile(r"###\s*(?:Instruction|Input)\b|<\|endoftext\|>|</s>|<\|im_end\|>")


@dataclass
class ParsedOutput:
    fields: dict[str, str] = field(default_factory=lambda: {name: "" for name in FIELDS})
    found: list[str] = field(default_factory=list)  # fields that had a marker, in order seen
    repeated: list[str] = field(default_factory=list)  # fields whose marker appeared again (ignored)
    style: str = "none"  # "angle", "dict" or "none"


def _unescape_if_flat(text: str) -> str:
    # Gorilla's released answers were JSON-encoded twice: newlines arrive as the two
    # characters backslash-n. Only undo that when the text has no real newline at all.
    if "\n" not in text and "\\n" in text:
        return text.replace("\\n", "\n").replace('\\"', '"')
    return text


def _clean(value: str, style: str) -> str:
    value = value.strip()
    if style == "angle":
        # TensorFlow Hub answers separate fields with ", " on one line.
        value = value.rstrip(",").strip()
        return value
    value = value.rstrip().rstrip("}").rstrip().rstrip(",").strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    elif value[:1] in "'\"" and value[-1:] != value[:1]:
        value = value[1:]  # truncated before its closing quote
    return value.replace("\\'", "'").replace('\\"', '"').strip()


def parse_output(text: str) -> ParsedOutput:
    text = _unescape_if_flat(text or "")
    # A new ###Instruction means the model went on to invent another task: cut there.
    stop = _STOP_RE.search(text)
    if stop:
        text = text[: stop.start()]
    marks = list(_ANGLE_RE.finditer(text))
    style = "angle"
    if not marks:
        marks = list(_DICT_RE.finditer(text))
        style = "dict" if marks else "none"
    result = ParsedOutput(style=style)
    for i, mark in enumerate(marks):
        name = _ALIASES[mark.group(1).lower()]
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        if name in result.found:
            result.repeated.append(name)
            continue
        value = text[mark.end():end]
        if style == "dict" and i + 1 < len(marks):
            value = value.rstrip().rstrip(",")
        result.fields[name] = _clean(value, style)
        result.found.append(name)
    return result


def format_answer(fields: dict[str, str]) -> str:
    """Gorilla's answer layout: the SFT target and the canonical rendering of any answer."""
    return (f"<<<domain>>>: {fields.get('domain', '')}\n"
            f"<<<api_call>>>: {fields.get('api_call', '')}\n"
            f"<<<api_provider>>>: {fields.get('provider', '')}\n"
            f"<<<explanation>>>: {fields.get('explanation', '')}\n"
            f"<<<code>>>: {fields.get('code', '')}")
