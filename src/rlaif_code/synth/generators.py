"""Generators of training examples from an API database, by name in `GENERATORS`.

A generator gets the API entries to write about and the synth config, and returns examples:
an instruction plus the answer's explanation and code. The answer's domain, api_call and
provider are always the source API's own (the database is the truth; a generator only writes
the words around it). Each example keeps its generator's name and its source API.

* `template` (synth/template.py): no LLM, offline and deterministic; instructions and
  explanations composed from the entry's functionality, description and arguments, the code
  from its example code. Weaker than an LLM: its phrasings are few and fixed, and they echo the
  documentation's own words.
* `llm` (synth/llm.py): self-instruct through an OpenAI-compatible server, with the feedback
  judges' client (concurrency, retries) and SQLite cache.
"""

from __future__ import annotations

from typing import Any, Callable

from rlaif_code.core.registry import Registry
from rlaif_code.synth.examples import GeneratorResult, SourceApi

Generator = Callable[[list[SourceApi], Any], GeneratorResult]
GENERATORS: Registry[Generator] = Registry("synth generator")


@GENERATORS.register("template")
def _template(apis: list[SourceApi], cfg: Any) -> GeneratorResult:
    from rlaif_code.synth.template import template_examples

    return GeneratorResult(template_examples(apis, cfg.per_api, cfg.seed))


@GENERATORS.register("llm")
def _llm(apis: list[SourceApi], cfg: Any) -> GeneratorResult:
    from rlaif_code.synth.llm import llm_examples

    return llm_examples(apis, cfg)
