"""The `hf` judge: a local transformers causal LM, P(yes) from its next-token logits.

Answers are cached under the model path plus a fingerprint of its files (names,
sizes, modification times), so retraining a model in place invalidates its answers.

Options (`HFJudgeConfig`, the `hf:` section of the feedback config): `model_path` (a
local directory with a causal LM and its tokenizer, e.g. an SFT output), `batch_size`,
`max_length` (prompts longer than this are cut from the left, so the question at the
end survives), `device`, `use_chat_template` (when the tokenizer has one).

One forward pass per batch of questions, no generation: the logits of the token after
the prompt give P(yes) = p(yes tokens) / (p(yes tokens) + p(no tokens)), pooling the
spellings "yes", "Yes", " yes", " Yes" (and the same for no). The answer is therefore
never unparseable; `yes_no_mass` (the share of probability the model put on the two
words at all) is kept with each reply, to tell a judge that knows it is being asked a
yes/no question from one that does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlaif_code.core.config import check_at_least
from rlaif_code.feedback.judges.base import (
    JudgeError,
    JudgeRequest,
    JudgeStats,
    JudgeSubject,
    OnResult,
    per_question_requests,
)
from rlaif_code.feedback.rubric import Question

YES_SPELLINGS = ("yes", "Yes", " yes", " Yes", "YES")
NO_SPELLINGS = ("no", "No", " no", " No", "NO")


@dataclass
class HFJudgeConfig:
    model_path: str = ""  # a local directory with a causal LM and its tokenizer (e.g. an SFT output)
    batch_size: int = 8  # questions per forward pass
    max_length: int = 1024  # tokens of prompt; longer prompts lose their start (the question is at the end)
    device: str = "cpu"  # torch device the judge runs on: cpu, cuda, cuda:1, ...
    use_chat_template: bool = True  # wrap the question in the tokenizer's chat template, when it has one

    def __post_init__(self) -> None:
        check_at_least(self, 1, "batch_size", "max_length")


def _load(model_path: str, device: str) -> tuple[Any, Any]:
    try:  # the project's loader, where it exists (adapters, dtype handling)
        from rlaif_code.core.models import load_causal_lm  # type: ignore[attr-defined]
    except ImportError:
        load_causal_lm = None
    if load_causal_lm is not None:
        try:
            loaded = load_causal_lm(model_path, device=device, padding_side="left")
        except TypeError:  # a loader with another signature than (path): fall back to transformers
            loaded = None
        if isinstance(loaded, tuple) and len(loaded) == 2:
            return loaded
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_path), AutoTokenizer.from_pretrained(model_path)


def first_token_ids(tokenizer: Any, spellings: tuple[str, ...]) -> set[int]:
    """The first token of each spelling, preferring tokens that spell the whole word."""
    whole, partial = set(), set()
    for spelling in spellings:
        ids = tokenizer.encode(spelling, add_special_tokens=False)
        if not ids:
            continue
        (whole if len(ids) == 1 else partial).add(ids[0])
    return whole or partial


def model_identity(model_path: str) -> str:
    """The path plus a fingerprint of its weights and configs, so a model retrained in place
    does not reuse the cached answers of its predecessor."""
    import hashlib
    from pathlib import Path

    folder = Path(model_path)
    if not folder.is_dir():
        return model_path
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if file.is_file() and file.suffix in (".safetensors", ".bin", ".json", ".model"):
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return f"{model_path}@{digest.hexdigest()[:12]}"


class HFJudge:
    kind = "hf"
    asks_llm = True

    def __init__(self, cfg: HFJudgeConfig) -> None:
        if not cfg.model_path:
            raise JudgeError("the hf judge needs hf.model_path (a local causal LM directory)")
        self.cfg = cfg
        self.model = model_identity(cfg.model_path)
        self.stats = JudgeStats()
        self._model: Any = None
        self._tokenizer: Any = None

    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        try:
            model, tokenizer = _load(self.cfg.model_path, self.cfg.device)
        except OSError as err:
            raise JudgeError(f"hf judge: cannot load a causal LM from '{self.cfg.model_path}': {err}") from err
        model.to(self.cfg.device).eval()
        tokenizer.padding_side = "left"
        tokenizer.truncation_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._model, self._tokenizer = model, tokenizer
        yes, no = first_token_ids(tokenizer, YES_SPELLINGS), first_token_ids(tokenizer, NO_SPELLINGS)
        # A token both words start with (a bare space in small vocabularies) tells nothing.
        self._yes, self._no = sorted(yes - no), sorted(no - yes)
        if not self._yes or not self._no:
            raise JudgeError(f"hf judge: the tokenizer of '{self.cfg.model_path}' cannot tell yes from no "
                             f"by their first tokens (yes {self._yes}, no {self._no})")

    def _prompt(self, messages: list[dict[str, str]]) -> str:
        tok = self._tokenizer
        if self.cfg.use_chat_template and getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        body = "\n\n".join(m["content"] for m in messages)
        return f"{body}\nAnswer:"

    def requests_for(self, subject: JudgeSubject, questions: list[Question]) -> list[JudgeRequest]:
        params = {"mode": "logits", "max_length": self.cfg.max_length, "chat_template": self.cfg.use_chat_template}
        return per_question_requests(self.kind, self.model, subject, questions, params)

    def answer(self, requests: list[JudgeRequest], on_result: OnResult) -> None:
        import torch

        if not requests:
            return
        self._ensure_loaded()
        size = max(1, self.cfg.batch_size)
        for start in range(0, len(requests), size):
            batch = requests[start:start + size]
            enc = self._tokenizer([self._prompt(r.messages) for r in batch], return_tensors="pt", padding=True,
                                  truncation=True, max_length=self.cfg.max_length, add_special_tokens=False)
            enc = {k: v.to(self.cfg.device) for k, v in enc.items()}
            mask = enc["attention_mask"]
            # Left padding: positions must count real tokens only.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = self._model(input_ids=enc["input_ids"], attention_mask=mask,
                                     position_ids=positions).logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            log_yes = torch.logsumexp(logp[:, self._yes], dim=-1)
            log_no = torch.logsumexp(logp[:, self._no], dim=-1)
            p_yes = torch.sigmoid(log_yes - log_no)
            mass = log_yes.exp() + log_no.exp()
            self.stats.requests += 1
            self.stats.prompt_tokens += int(mask.sum())
            for i, req in enumerate(batch):
                p = float(p_yes[i])
                on_result(req, {"path": "logits", "raw": None, "yes_no_mass": float(mass[i]),
                                "usage": {"prompt_tokens": int(mask[i].sum()), "completion_tokens": 0},
                                "answers": {req.question_ids[0]: {"answer": "yes" if p >= 0.5 else "no",
                                                                  "p_yes": p}}})
            self.stats.paths["logits"] = self.stats.paths.get("logits", 0) + len(batch)

    def close(self) -> None:
        self._model = None
