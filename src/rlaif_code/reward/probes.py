"""Examples built from the training data itself: the reference answers and the ways PPO has broken them.

The one full-size run's reward model had never seen a truncated answer, and PPO found that a bare
domain + api_call scored best on every prompt. These examples show the reward model, for each
prompt, its reference answer (a positive) next to the shapes of a wrong one (negatives):

| kind | the answer |
| --- | --- |
| truncated | the reference cut after its api_call (no provider, explanation or code) |
| no_code | every field but the code |
| swapped_same_domain | another prompt's reference answer whose API has this API's domain (a plausible, wrong API) |
| swapped_other_domain | another prompt's reference answer from another domain (a real API for another task) |
| invented_name | the reference with its model name changed into one that does not exist |

Training adds, per training prompt, the positive and `synthetic_negatives` negatives (kinds taken
in a seeded rotation so that each is equally common); with `pairwise_weight` the stage also trains
each (reference, negative) pair to rank the reference first (`training_pairs`). Held-out prompts get every kind, and the
**probe accuracy** of a kind is how often the reward model scores the reference above that
negative: 1.0 means the exploit cannot pay, 0.5 means the model cannot tell.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif_code.core.artifacts import InputError, iter_jsonl
from rlaif_code.data.parse import format_answer

KINDS = ("truncated", "no_code", "swapped_same_domain", "swapped_other_domain", "invented_name")
_FIELDS = ("domain", "api_call", "provider", "explanation", "code")
_LITERAL = re.compile(r"""(['"])([A-Za-z0-9_./:-]{2,})\1""")
_INVENTED_SUFFIXES = ("_pro", "_xl", "_v7", "_plus", "_mega", "_ultra")


@dataclass(frozen=True)
class Reference:
    group: str  # example_id, as in the feedback rows
    prompt: str
    fields: dict[str, str]
    domain: str  # the reference API's domain


def load_references(data_dir: str | Path) -> list[Reference]:
    """The data stage's train.jsonl rows with a complete reference answer."""
    path = Path(data_dir) / "train.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: not found (reward.synthetic_data_dir: the data stage's out_dir, or null "
                         "to train on the feedback labels alone)")
    out = []
    for lineno, row in iter_jsonl(path):
        missing = [key for key in ("example_id", "prompt", *_FIELDS) if not isinstance(row.get(key), str)]
        if missing:
            raise InputError(f"{path}:{lineno}: missing string field '{missing[0]}'")
        domain = str((row.get("reference_api") or {}).get("domain") or row["domain"])
        out.append(Reference(str(row["example_id"]), row["prompt"], {k: row[k] for k in _FIELDS}, domain))
    return out


def answer_text(prompt: str, fields: dict[str, str], truncated: bool = False) -> str:
    """prompt + answer in the SFT target's layout (the layout sampled answers have)."""
    if truncated:
        return f"{prompt} <<<domain>>>: {fields['domain']}\n<<<api_call>>>: {fields['api_call']}"
    return prompt + " " + format_answer(fields)


def _invented(fields: dict[str, str], rng: random.Random) -> dict[str, str] | None:
    """The reference with the last quoted name of its api_call (the model id) changed everywhere."""
    names = [m.group(2) for m in _LITERAL.finditer(fields["api_call"])]
    if not names:
        return None
    name = names[-1]
    fake = name + rng.choice(_INVENTED_SUFFIXES)
    return {**fields, "api_call": fields["api_call"].replace(name, fake), "code": fields["code"].replace(name, fake)}


def negative(ref: Reference, kind: str, others: list[Reference], rng: random.Random) -> str | None:
    """One negative of `kind` for `ref`, or None where the data has none (no other API of that domain)."""
    if kind == "truncated":
        return answer_text(ref.prompt, ref.fields, truncated=True)
    if kind == "no_code":
        return answer_text(ref.prompt, {**ref.fields, "code": ""})
    if kind == "invented_name":
        fields = _invented(ref.fields, rng)
        return answer_text(ref.prompt, fields) if fields else None
    same = kind == "swapped_same_domain"
    pool = [o for o in others if (o.domain == ref.domain) == same and o.fields["api_call"] != ref.fields["api_call"]]
    if not pool:
        return None
    return answer_text(ref.prompt, rng.choice(pool).fields)


def training_pairs(refs: list[Reference], groups: set[str], negatives_per_prompt: int,
                   seed: int) -> list[tuple[str, str, list[str]]]:
    """(group, reference text, its negatives) for the training prompts, negative kinds in a seeded rotation."""
    rng = random.Random(seed)
    chosen = [r for r in refs if r.group in groups]
    out: list[tuple[str, str, list[str]]] = []
    rotation = list(KINDS)
    rng.shuffle(rotation)
    turn = 0
    for ref in chosen:
        negatives: list[str] = []
        for _ in range(len(KINDS)):
            if len(negatives) == negatives_per_prompt:
                break
            kind = rotation[turn % len(rotation)]
            turn += 1
            text = negative(ref, kind, refs, rng)
            if text is not None:
                negatives.append(text)
        out.append((ref.group, answer_text(ref.prompt, ref.fields), negatives))
    return out


def training_examples(refs: list[Reference], groups: set[str], negatives_per_prompt: int,
                      seed: int) -> list[tuple[str, str, int]]:
    """(group, text, label) rows for the training prompts: each reference, and negatives in rotation."""
    return [row for group, positive, negatives in training_pairs(refs, groups, negatives_per_prompt, seed)
            for row in [(group, positive, 1), *((group, text, 0) for text in negatives)]]


def probe_sets(refs: list[Reference], groups: set[str], seed: int) -> dict[str, list[tuple[str, str]]]:
    """kind -> [(reference text, negative text)] over the held-out prompts."""
    rng = random.Random(seed + 1)
    pairs: dict[str, list[tuple[str, str]]] = {kind: [] for kind in KINDS}
    for ref in (r for r in refs if r.group in groups):
        positive = answer_text(ref.prompt, ref.fields)
        for kind in KINDS:
            text = negative(ref, kind, refs, rng)
            if text is not None:
                pairs[kind].append((positive, text))
    return pairs


def probe_accuracies(pairs: dict[str, list[tuple[str, str]]], score: Any) -> dict[str, Any]:
    """`score(texts) -> scores`; per kind, the share of pairs where the reference scores higher."""
    out: dict[str, Any] = {}
    for kind, kind_pairs in pairs.items():
        if not kind_pairs:
            out[kind] = None
            continue
        scores = score([text for pair in kind_pairs for text in pair])
        wins = [scores[2 * i] > scores[2 * i + 1] for i in range(len(kind_pairs))]
        out[kind] = sum(wins) / len(wins)
    out["n_pairs"] = {kind: len(kind_pairs) for kind, kind_pairs in pairs.items()}
    return out
