"""The `template` generator: training examples from an API entry's own words, with no LLM.

Each entry gets `per_api` instructions, picked (seeded, per API) from six phrasings built from
its functionality, domain, framework, description and arguments; the explanation lists the steps
Gorilla's answers list (import, load, call, use); the code is the entry's example code, or, where
it has none, the call itself after the import its requirements suggest.

What it is not: these instructions echo the documentation instead of describing a user's
problem in a user's words, there are six shapes of them, and an entry with a thin description
gets thin instructions. A model trained on them learns which call goes with which documented
task and the answer format; an `llm` generator writes instructions closer to real requests.
"""

from __future__ import annotations

import random
import re
from typing import Any

from rlaif_code.synth.examples import SourceApi, SynthExample, gorilla_text

_EMPTY = {"", "n/a", "na", "none", "null", "-"}
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value if str(v).strip())
    return "" if value is None else str(value).strip()


def soft_lower(text: str) -> str:
    """Title-cased words lower-cased, acronyms and names kept: "Image Classification" -> "image
    classification", "BERT Embeddings" -> "BERT embeddings"."""
    return " ".join(w.lower() if w[:1].isupper() and (w[1:].islower() or len(w) == 1) else w for w in text.split())


def first_sentence(description: str, limit: int = 220) -> str:
    sentence = _SENTENCE_RE.split(" ".join(description.split()), maxsplit=1)[0].strip()
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + "..."
    return sentence if sentence.endswith((".", "!", "?", "...")) else sentence + "."


def names_of(value: Any, limit: int = 4) -> list[str]:
    """Argument or package names from Gorilla's loose forms: a list, an object's keys, a comma list."""
    if isinstance(value, dict):
        items = [str(k) for k in value]
    elif isinstance(value, list):
        items = [next(iter(v), "") if isinstance(v, dict) else str(v) for v in value]
    elif isinstance(value, str):
        items = re.split(r"[,;\n]", value)
    else:
        items = []
    cleaned = [" ".join(str(item).split()) for item in items]
    return [item for item in cleaned if item.lower() not in _EMPTY and len(item) <= 60][:limit]


def example_code(entry: dict[str, Any]) -> str:
    code = entry.get("example_code")
    if isinstance(code, dict):
        code = "\n".join(str(v) for v in code.values() if isinstance(v, str))
    elif isinstance(code, list):
        code = "\n".join(str(line) for line in code)
    code = (code or "").strip()
    return code if code.lower() not in _EMPTY else ""


def fallback_code(entry: dict[str, Any]) -> str:
    """The call after the import its requirements suggest: `from transformers import AutoModel` for
    `AutoModel.from_pretrained(...)`, `import torch` for `torch.hub.load(...)`."""
    call = str(entry["api_call"]).strip()
    root = re.match(r"\s*([A-Za-z_]\w*)", call)
    packages = [p.split("=")[0].split(">")[0].split("<")[0].strip() for p in
                names_of(entry.get("python_environment_requirements"))]
    packages = [p for p in packages if p.isidentifier()]
    lines = []
    if root and packages:
        name = root.group(1)
        lines.append(f"import {name}" if name in packages else f"from {packages[0]} import {name}")
    lines.append(call if "=" in call.split("(")[0] else f"model = {call}")
    return "\n".join(lines)


def _phrasings(entry: dict[str, Any]) -> list[str]:
    task_lc = soft_lower(_text(entry.get("functionality")) or _text(entry.get("domain")))
    domain = soft_lower(_text(entry.get("domain")))
    framework = _text(entry.get("framework"))
    name = _text(entry.get("api_name"))
    about = first_sentence(_text(entry.get("description")))
    args = names_of(entry.get("api_arguments"))
    with_args = f", passing {', '.join(args)}" if args else ""
    return [
        f"Write Python code that uses {name} for {task_lc}.",
        f"Our team works on {domain} and needs {task_lc}. What we are looking for: {about} "
        "Show how to load it and use it.",
        f"Which {framework} API should I call for {task_lc}? {about}",
        f"Load a {framework} model for {task_lc} and run it{with_args}.",
        f"I am building an application in {domain}. Find an API for this: {about}",
        f"Give me code that loads {name}{with_args}, for {task_lc}.",
    ]


def explanation(entry: dict[str, Any]) -> str:
    packages = names_of(entry.get("python_environment_requirements"))
    args = names_of(entry.get("api_arguments"))
    about = first_sentence(_text(entry.get("description")))
    task = soft_lower(_text(entry.get("functionality")) or _text(entry.get("domain")))
    libraries = f" ({', '.join(packages)})" if packages else ""
    steps = [f"Import the necessary libraries{libraries}.",
             f"Call {entry['api_call'].strip()} to load {entry['api_name']}. {about}"]
    if args:
        steps.append(f"Provide its arguments: {', '.join(args)}.")
    steps.append(f"Use the loaded model for {task}.")
    return " ".join(f"{i}. {step}" for i, step in enumerate(steps, start=1))


def template_examples(apis: list[SourceApi], per_api: int, seed: int) -> list[SynthExample]:
    out = []
    for api in apis:
        entry = api.entry
        phrasings = _phrasings(entry)
        # Seeded per API, not by position: adding an entry to the database changes no other's examples.
        picked = random.Random(f"{seed}:{entry['api_name']}:{entry['api_call']}").sample(
            range(len(phrasings)), min(per_api, len(phrasings)))
        why = explanation(entry)
        code = example_code(entry)
        # Example code holding what ends an answer (`</s>`, a `<<<code>>>` marker) would be cut when read back.
        if not code or gorilla_text(SynthExample(phrasings[0], why, code, "template", api)) is None:
            code = fallback_code(entry)
        out += [SynthExample(phrasings[i], why, code, "template", api) for i in picked]
    return out
