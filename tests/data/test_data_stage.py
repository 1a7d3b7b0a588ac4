"""The data layer on the real shared Gorilla files."""

from __future__ import annotations

import json

import pytest

from rlaif_code.cli import main
from rlaif_code.core.artifacts import InputError
from rlaif_code.data import DataConfig, load_split, run
from rlaif_code.data.apibench import load_api_database, load_examples, split_pool
from rlaif_code.data.prompts import BM25Retriever, PromptBuilder, build_prompt
from rlaif_code.data.source import DataSource

FILES = [("torchhub_train", "th", 837), ("torchhub_eval", "th", 186), ("huggingface_eval", "hf", 911),
         ("tensorflow_eval", "tf", 688)]


@pytest.mark.parametrize("stem,hub,count", FILES)
def test_every_row_of_every_apibench_file_parses(gorilla_data, stem, hub, count):
    examples = load_examples(gorilla_data / "apibench" / f"{stem}.json", hub)
    assert len(examples) == count
    assert all(e.instruction and e.api_call and e.domain for e in examples)
    # Rows are in file order with 1-based question ids, Gorilla's convention.
    assert [e.question_id for e in examples] == list(range(1, count + 1))
    # Nearly every row carries all five fields in its own text; the rest are filled from metadata.
    assert sum(e.complete for e in examples) / count > 0.95


def test_torchhub_dict_string_fields(gorilla_data):
    first = load_examples(gorilla_data / "apibench" / "torchhub_train.json", "th")[0]
    assert first.instruction.startswith("I need an API that can estimate the relative depth")
    assert first.domain == "Classification"
    assert first.api_call == "model = torch.hub.load('intel-isl/MiDaS', 'DPT_Hybrid', pretrained=True)"
    assert first.provider == "PyTorch"
    assert first.code == 'import torch\nmodel = torch.hub.load("intel-isl/MiDaS", "DPT_Hybrid", pretrained=True)'
    assert first.reference_api["api_name"] == "MiDaS"


def test_torchhub_row_with_input_and_plain_output_parses(gorilla_data):
    row = load_examples(gorilla_data / "apibench" / "torchhub_train.json", "th")[356]
    assert "###Input:" in row.instruction and not row.complete
    assert row.api_call.startswith("torch.hub.load(")  # filled from the row's metadata


def test_unparseable_row_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    good = {"code": "###Instruction: do x\n###Output: <<<domain>>>: d\n<<<api_call>>>: f(1)", "api_call": "f(1)",
            "provider": "p", "api_data": {"domain": "d", "api_call": "f(1)"}}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "code": "no markers here"}) + "\n")
    with pytest.raises(InputError, match=r"bad\.json:2"):
        load_examples(path, "hf")


def test_malformed_json_line_is_reported(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json}\n")
    with pytest.raises(InputError, match=r"bad\.json:1"):
        load_examples(path, "th")


@pytest.mark.parametrize("hub,count", [("hf", 936), ("tf", 696), ("th", 94)])
def test_api_databases(gorilla_data, hub, count):
    assert len(load_api_database(DataSource.resolve(gorilla_data), hub)) == count


def test_shared_question_and_response_files_are_readable(gorilla_data):
    from rlaif_code.core.artifacts import read_jsonl

    folders = (gorilla_data / "questions", gorilla_data / "responses")
    for path in [p for folder in folders for p in sorted(folder.glob("*.jsonl"))]:
        rows = read_jsonl(path)
        assert rows and all(isinstance(r["question_id"], int) and isinstance(r["text"], str) for r in rows)


def test_pool_split_is_seeded_disjoint_and_ninety_ten(gorilla_data):
    examples = load_examples(gorilla_data / "apibench" / "huggingface_eval.json", "hf")
    train, evals = split_pool(examples, 0.1, seed=3)
    again_train, again_eval = split_pool(list(reversed(examples)), 0.1, seed=3)
    assert [e.example_id for e in evals] == [e.example_id for e in again_eval]
    assert len(evals) == 91 and len(train) == 820
    assert not {e.example_id for e in train} & {e.example_id for e in evals}
    assert [e.example_id for e in split_pool(examples, 0.1, seed=4)[1]] != [e.example_id for e in evals]


def test_prompt_format_and_oracle_context(gorilla_data):
    example = load_examples(gorilla_data / "apibench" / "torchhub_eval.json", "th")[0]
    assert build_prompt("Do it") == "###Instruction: Do it\n###Output:"
    oracle = PromptBuilder("oracle")(example)
    assert oracle.startswith("###Instruction: ") and oracle.endswith("###Output:")
    assert "Use this API documentation for reference:" in oracle
    api = example.reference_api
    assert api["api_call"].replace("'", "\\'")[:20] in oracle or api["api_name"] in oracle


def test_bm25_retrieves_the_reference_api_often(gorilla_data):
    source = DataSource.resolve(gorilla_data)
    retriever = BM25Retriever(load_api_database(source, "th"))
    examples = load_examples(gorilla_data / "apibench" / "torchhub_eval.json", "th")[:60]
    hits = sum(any(api["api_call"] == e.reference_api["api_call"] for api in retriever.top_k(e.instruction, 5))
               for e in examples)
    # Four times chance (5 of 94 APIs = 5%; measured 30%): it really ranks by the instruction.
    assert hits / len(examples) > 0.2


def test_data_stage_writes_splits_with_prompts_and_config(tmp_path, gorilla_data):
    out = tmp_path / "data"
    assert main(["data", "--hub", "th", "--max_train", "20", "--max_eval", "5", "--out_dir", str(out),
                 "--retrieval", "bm25"]) == 0
    train, dev, evals = load_split(out, "train"), load_split(out, "dev"), load_split(out, "eval")
    # a tenth of the training examples set aside as dev prompts, none of them an eval item
    assert len(train) == 18 and len(dev) == 2 and len(evals) == 5
    ids = [{r["example_id"] for r in rows} for rows in (train, dev, evals)]
    assert not ids[0] & ids[1] and not ids[1] & ids[2] and all(i.startswith("torchhub_train") for i in ids[1])
    assert all(r["prompt"].endswith("###Output:") and r["target"].startswith(" <<<domain>>>:") for r in train)
    assert "reference:" in train[0]["prompt"]
    record = json.loads((out / "stage.json").read_text())
    assert record["config"]["max_train"] == 20 and record["finished"]
    # A rerun with the same config is skipped; the files stay identical.
    before = (out / "train.jsonl").read_text()
    again = run(DataConfig(hub="th", max_train=20, max_eval=5, out_dir=str(out), retrieval="bm25"))
    assert again == {**record["metrics"], "skipped": True}
    assert (out / "train.jsonl").read_text() == before


def test_a_dev_fraction_that_leaves_no_dev_prompt_names_the_key(tmp_path, gorilla_data):
    with pytest.raises(InputError, match="data.dev_fraction=0.01 sets aside 0 of 20"):
        run(DataConfig(hub="th", max_train=20, max_eval=5, dev_fraction=0.01, out_dir=str(tmp_path / "d")))
    assert run(DataConfig(hub="th", max_train=20, max_eval=5, dev_fraction=0.0, out_dir=str(tmp_path / "e")))[
        "n_dev"] == 0
    assert not (tmp_path / "e" / "dev.jsonl").exists()


def test_missing_data_dir_says_which(tmp_path, capsys):
    assert main(["data", "--data", str(tmp_path / "nowhere"), "--out_dir", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_missing_file_in_data_dir_says_which_and_where_to_get_it(tmp_path):
    (tmp_path / "api").mkdir()
    with pytest.raises(InputError, match=r"torchhub_api\.jsonl.*raw\.githubusercontent\.com"):
        load_api_database(DataSource.resolve(tmp_path), "th")


def test_download_into_cache_when_no_data_dir_is_given(tmp_path, monkeypatch, gorilla_data):
    """The online path, against a real HTTP server on 127.0.0.1 laid out like Gorilla's repository."""
    import functools
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    mirror = tmp_path / "mirror"
    (mirror / "data" / "api").mkdir(parents=True)
    shutil.copy(gorilla_data / "api" / "torchhub_api.jsonl", mirror / "data" / "api")
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(mirror)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("RLAIF_DATA")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setenv("RLAIF_DATA_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        source = DataSource.resolve(None)
        assert len(load_api_database(source, "th")) == 94
        assert len(load_api_database(DataSource.resolve(None), "th")) == 94  # second time: from the cache
        assert requests == ["/data/api/torchhub_api.jsonl"]
        assert (tmp_path / "cache" / "rlaif-code" / "gorilla" / "api" / "torchhub_api.jsonl").is_file()
        with pytest.raises(InputError, match=r"cannot download .*torchhub_eval\.json.*Offline\?"):
            source.path("apibench/torchhub_eval.json")  # not on the mirror: a clear error, no partial file
        assert not list((tmp_path / "cache").rglob("*.part"))
    finally:
        server.shutdown()
        server.server_close()
