"""The llm generator against a real OpenAI-compatible HTTP server on 127.0.0.1 (scripted replies)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from judge_server import ScriptedServer, chat_reply, error_reply, last_user_message
from rlaif_code.cli import main
from rlaif_code.core.artifacts import read_jsonl, read_stage_record
from rlaif_code.synth import SynthConfig, run
from rlaif_code.synth.llm import SynthLLMConfig
from tiny import CUSTOM_APIS, CUSTOM_EVAL, write_custom_hub


def _script(body: dict, n: int):
    """Two examples per API; the first request fails once (a retry), acme/ears gets prose (unreadable), and
    the forecaster's first instruction copies an eval instruction (removed by the overlap filter)."""
    if n == 0:
        return error_reply(503)
    name = re.search(r'"api_name": "([^"]+)"', last_user_message(body)).group(1)
    if name == "acme/ears":
        return chat_reply("Sure! Here are some ideas for speech recognition.")
    call = next(api["api_call"] for api in CUSTOM_APIS if api["api_name"] == name)
    first = CUSTOM_EVAL[2][0] if name == "acme_sdk.Forecaster" else f"Help me with the task {name} solves."
    items = [{"instruction": first, "explanation": "1. Import. 2. Load.", "code": f"x = {call}"},
             {"instruction": f"Another way to use {name} at work, please.", "explanation": "1. Load it.",
              "code": f"y = {call}"}]
    return chat_reply("```json\n" + json.dumps(items) + "\n```")


def _cfg(tmp_path: Path, server: ScriptedServer, out: str) -> SynthConfig:
    api_db, eval_file = write_custom_hub(tmp_path / "hub")
    llm = SynthLLMConfig(base_url=server.url, model="scripted", concurrency=1, backoff_s=0.01)
    return SynthConfig(hub="custom", api_db=str(api_db), eval_file=str(eval_file), generators=["llm"], per_api=2,
                       llm=llm, cache_path=str(tmp_path / "cache.sqlite"), out_dir=str(tmp_path / out))


def test_self_instruct_through_the_judges_client_and_cache(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedServer(_script) as server:
        metrics = run(_cfg(tmp_path, server, "a"))
        sent = len(server.bodies)
        assert sent == len(CUSTOM_APIS) + 1  # one request per API, one retry
        again = run(_cfg(tmp_path, server, "b"))  # another out_dir, the same cache: nothing is sent
        assert len(server.bodies) == sent
    stats = metrics["generator_stats"]["llm"]
    assert stats["unreadable_replies"] == 1 and stats["retries"] == 1 and stats["errors"] == {"http_503": 1}
    assert metrics["removed_by_overlap"] == 1
    assert metrics["n_examples"] == metrics["per_generator"]["llm"] == 2 * (len(CUSTOM_APIS) - 1) - 1
    assert again["n_examples"] == metrics["n_examples"] and again["generator_stats"]["llm"]["cache_hits"] == 5
    rows = read_jsonl(tmp_path / "a" / "synth.jsonl")
    assert {row["generator"] for row in rows} == {"llm"}
    assert "acme/ears" not in {row["source_api"] for row in rows}
    widget = next(row for row in rows if row["source_api"] == "acme/widget-detector")
    # The answer's call, domain and provider are the database's; the LLM wrote the words and the code.
    assert "<<<api_call>>>: AutoModel.from_pretrained('acme/widget-detector')\n" in widget["code"]
    assert "<<<code>>>: x = AutoModel.from_pretrained('acme/widget-detector')" in widget["code"]
    # The prompt shows the API's document and never an eval item.
    prompts = " ".join(last_user_message(body) for body in server.bodies)
    assert all(instruction not in prompts for instruction, _, _ in CUSTOM_EVAL)


def test_a_server_that_stays_down_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with ScriptedServer(lambda body, n: error_reply(500)) as server:
        cfg = _cfg(tmp_path, server, "a")
        argv = ["synth", "--hub", "custom", "--api_db", cfg.api_db, "--generators", "[llm]", "--llm.base_url",
                server.url, "--llm.max_retries", "0", "--out_dir", cfg.out_dir, "--cache_path", cfg.cache_path]
        assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "HTTP 500" in err[0]
    assert read_stage_record(tmp_path / "a") is None
