"""What generators make: examples written about one API entry, and how they become training rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlaif_code.data.parse import FIELDS, format_answer, parse_output
from rlaif_code.data.prompts import INSTRUCTION_MARKER, OUTPUT_MARKER


@dataclass(frozen=True)
class SourceApi:
    line: int  # 1-based line of the entry in its API database file
    entry: dict[str, Any]


@dataclass
class SynthExample:
    instruction: str
    explanation: str
    code: str
    generator: str
    source: SourceApi


@dataclass
class GeneratorResult:
    examples: list[SynthExample]
    stats: dict[str, Any] = field(default_factory=dict)


def answer_fields(example: SynthExample) -> dict[str, str]:
    entry = example.source.entry
    return {"domain": str(entry["domain"]).strip(), "api_call": str(entry["api_call"]).strip(),
            "provider": str(entry["framework"]).strip(), "explanation": example.explanation.strip(),
            "code": example.code.strip()}


def gorilla_text(example: SynthExample) -> str | None:
    """The example as Gorilla's training text, or None where the data stage would not read back
    exactly what was written (a field holding a marker such as `<<<code>>>` or `###Instruction`)."""
    fields = answer_fields(example)
    instruction = " ".join(example.instruction.split())
    if not instruction or "###" in instruction or not all(fields.values()):
        return None
    answer = format_answer(fields)
    parsed = parse_output(answer)
    if parsed.found != list(FIELDS) or parsed.repeated or any(parsed.fields[n] != fields[n] for n in FIELDS):
        return None
    return f"{INSTRUCTION_MARKER} {instruction}\n{OUTPUT_MARKER} {answer}"


def example_row(example: SynthExample, text: str, overlap: float) -> dict[str, Any]:
    """A row of an APIBench example file (what `data.train_file` reads), plus where it came from."""
    entry = example.source.entry
    return {"code": text, "api_call": entry["api_call"], "provider": entry["framework"], "api_data": entry,
            "generator": example.generator, "source_api": entry["api_name"], "source_line": example.source.line,
            "eval_overlap": round(overlap, 4)}
