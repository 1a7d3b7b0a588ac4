"""Hermetic stand-in inputs: missing files a snippet reads and URLs it fetches, in the real sandbox.

The stdlib tests run in the minimal venv / the fake libraries of conftest.py (any machine); the
PIL / requests / soundfile tests run the real libraries of the exec env and skip without it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rlaif_code.sandbox.env import default_env_path, env_python
from rlaif_code.sandbox.runner import Limits, Sandbox
from rlaif_code.sandbox.tiers import ExecutabilityChecker

KNOWN = {"hf": ["good-org/good-model"], "th": {}, "tf": []}


def _exec_env() -> Path:
    python = env_python(default_env_path())
    if not python.exists():
        pytest.skip("no exec env: build it with `rlaif exec-env` to test the real readers")
    return python


@pytest.fixture
def exec_sandbox(tmp_path: Path):
    with Sandbox(_exec_env(), mode="hermetic", known_ids=KNOWN, temp_root=tmp_path,
                 limits=Limits(timeout=60)) as sandbox:
        yield sandbox


@pytest.fixture
def fake_sandbox(fake_env: Path, tmp_path: Path):
    with Sandbox(fake_env, mode="hermetic", known_ids=KNOWN, temp_root=tmp_path, limits=Limits(timeout=30)) as sandbox:
        yield sandbox


def _run(sandbox: Sandbox, code: str):
    return sandbox.run(textwrap.dedent(code))


def test_missing_image_read_with_pil_gets_a_stand_in(exec_sandbox: Sandbox) -> None:
    result = _run(exec_sandbox, """
        from PIL import Image
        image = Image.open('cat.jpg').convert('RGB')
        print(image.size, Image.open('cat.jpg').format)
        print(Image.open('/path/to/your/photo.png').format)  # outside the workdir: made elsewhere, read from there
        print(Image.open('your_image_path').size)  # no extension: PIL.Image.open reads images
    """)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["(64, 64) JPEG", "PNG", "(64, 64)"]
    assert result.stand_ins == [["file", "cat.jpg", "image"], ["file", "/path/to/your/photo.png", "image"],
                                ["file", "your_image_path", "image"]]


def test_fetched_image_url_is_answered_without_the_network(exec_sandbox: Sandbox) -> None:
    result = _run(exec_sandbox, """
        from io import BytesIO
        import requests
        from PIL import Image
        response = requests.get('https://example.com/a.png')
        response.raise_for_status()
        print(response.status_code, response.headers['Content-Type'], Image.open(BytesIO(response.content)).size)
        print(Image.open(requests.get('http://images.cocodataset.org/val2017/1.jpg', stream=True).raw).format)
        # a URL that names no type is a web page; handed to PIL it is swapped for an image
        print(Image.open(requests.get('https://your_url_here', stream=True).raw).size)
    """)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["200 image/png (64, 64)", "JPEG", "(64, 64)"]
    assert ["url", "https://example.com/a.png", "image"] in result.stand_ins
    assert ["url", "https://your_url_here/", "html"] in result.stand_ins


def test_missing_audio_read_with_soundfile_gets_a_tone(exec_sandbox: Sandbox) -> None:
    result = _run(exec_sandbox, """
        import soundfile as sf
        speech, rate = sf.read('speech.wav')
        mixture, _ = sf.read('/data/mixture.flac')
        print(speech.shape, rate, mixture.shape, round(float(abs(speech).max()), 2))
    """)
    assert result.ok, result.stderr
    assert result.stdout.strip() == "(16000,) 16000 (16000,) 0.24"
    assert [s[2] for s in result.stand_ins] == ["audio", "audio"]


def test_tabular_snippet_runs_on_a_stand_in_table(exec_sandbox: Sandbox) -> None:
    result = _run(exec_sandbox, """
        import io, json, joblib
        import pandas as pd
        model = joblib.load('model.joblib')
        config = json.load(open('config.json'))
        data = pd.read_csv('data.csv')[config['features']]
        other = pd.read_csv('customers.csv')[['age', 'fare']]  # columns the stand-in did not have
        print(model.predict(data), data.shape, other.shape, other['age'].tolist())
        try:
            pd.read_csv(io.StringIO('a,b\\n1,2\\n'))['age']  # a real table still has only its columns
        except KeyError:
            print('KeyError')
    """)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["<stand-in load('model.joblib')> (5, 3) (5, 2) [0.0, 1.0, 2.0, 3.0, 4.0]",
                                          "KeyError"]
    assert ["column", "customers.csv:age", "float"] in result.stand_ins


def test_stdlib_inputs_tables_and_urls(fake_sandbox: Sandbox) -> None:
    result = _run(fake_sandbox, """
        import csv, json, wave, joblib
        from urllib.request import urlopen
        with wave.open('clip.wav') as clip:  # audio read with the stdlib alone
            print(clip.getframerate(), clip.getnframes(), clip.getnchannels())
        config = json.load(open('config.json'))
        rows = list(csv.DictReader(open('data/input.csv')))
        print(config['features'], len(rows), [rows[0][f] for f in config['features']])
        print(open('article.txt').read().split()[:2])
        model = joblib.load('model.joblib')
        print(model.predict(rows))
        with urlopen('https://example.com/api/items.json') as page:
            print(page.status, page.headers['Content-Type'], sorted(json.load(page)))
        open('written.txt', 'w').write('kept')
        print(open('written.txt').read())
    """)
    assert result.ok, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "16000 16000 1"
    assert lines[1] == "['feature_0', 'feature_1', 'feature_2'] 5 ['0.0', '0', '1.0']"
    assert lines[2] == "['The', 'quick']"
    assert lines[3] == "<stand-in load('model.joblib')>"
    assert lines[4] == "200 application/json ['features', 'target', 'text']"
    assert lines[5] == "kept"
    assert [s[0] for s in result.stand_ins] == ["file"] * 5 + ["url"]


@pytest.mark.parametrize("code, error", [
    ("open('weights')", "FileNotFoundError"),  # no extension: nothing to say what it holds
    ("import sys, os\nopen(os.path.join(sys.prefix, 'lib', 'gone.txt'))", "FileNotFoundError"),  # library files
    ("import os\nos.stat('cat.jpg')", "FileNotFoundError"),  # only reads stand in, not existence checks
])
def test_what_is_not_stood_in_still_fails(fake_sandbox: Sandbox, code: str, error: str) -> None:
    result = fake_sandbox.run(code)
    assert result.status == "exception" and result.exception_type == error
    assert result.stand_ins == []


def test_network_stays_blocked_for_what_is_not_a_stand_in(fake_sandbox: Sandbox) -> None:
    result = _run(fake_sandbox, """
        import http.client, socket, urllib.error, urllib.request
        try:  # loopback is not answered: it reaches the sandbox's own (empty) loopback
            urllib.request.urlopen('http://127.0.0.1:9/', timeout=5)
        except urllib.error.URLError as exc:
            print('loopback refused:', type(exc.reason).__name__)
        try:
            http.client.HTTPSConnection('example.com', timeout=5).request('GET', '/')
        except OSError as exc:
            print('http.client failed:', type(exc).__name__)
        socket.create_connection(('93.184.216.34', 80), timeout=5)
    """)
    assert result.status == "exception" and result.exception_type == "OSError", result.short()
    assert "Network is unreachable" in result.exception_message
    assert result.stdout.splitlines() == ["loopback refused: ConnectionRefusedError", "http.client failed: gaierror"]
    assert result.stand_ins == []


def test_plain_mode_stands_in_nothing(fake_env: Path, tmp_path: Path) -> None:
    with Sandbox(fake_env, mode="plain", temp_root=tmp_path) as sandbox:
        result = sandbox.run("open('cat.jpg', 'rb')")
    assert result.exception_type == "FileNotFoundError" and result.stand_ins == []


def test_verdicts_carry_the_stand_ins(fake_sandbox: Sandbox) -> None:
    checker = ExecutabilityChecker(fake_sandbox, workers=1)
    [verdict] = checker.check(["text = open('input.txt').read()\n"], "run")
    assert verdict.run and verdict.stand_ins == [["file", "input.txt", "text"]]


def test_placeholder_inputs_are_bound_by_what_their_names_say(fake_sandbox: Sandbox) -> None:
    result = _run(fake_sandbox, """
        from urllib.request import urlopen
        print(open(image_path, 'rb').read()[:4], open(IMAGE_PATH, 'rb').read()[:4] == b'\\x89PNG')
        print(open(user_audio_file, 'rb').read()[:4], audio_sampling_rate)
        print(article_text.split()[:2], question.endswith('?'), len(texts), len(image_paths))
        print(urlopen(image_url).headers['Content-Type'])
        def answer(context):  # an argument is bound: never a placeholder
            return context
        print(answer('kept'))
    """)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["b'\\x89PNG' True", "b'RIFF' 16000", "['The', 'quick'] True 2 2",
                                          "image/png", "kept"]
    names = [s[1:] for s in result.stand_ins if s[0] == "name"]
    assert names == [["IMAGE_PATH", "image path"], ["article_text", "text"], ["audio_sampling_rate", "sampling rate"],
                     ["image_path", "image path"], ["image_paths", "image path"], ["image_url", "url"],
                     ["question", "text"], ["texts", "text"], ["user_audio_file", "audio path"]]


@pytest.mark.parametrize("code, missing", [
    ("x = torch.tensor([1])", "torch"),  # a missing import is the code's error
    ("image = preprocess_image(image_path)", "preprocess_image"),  # a helper it called but never defined
    ("features = feature_extractor(text)", "feature_extractor"),
    ("outputs = model(inputs)", "model"),  # nothing in the name says what it holds
    ("from os.path import *\nprint(article_text)", "article_text"),  # a star import could define anything
    ("print(article_text)\narticle_text = 'too late'", "article_text"),  # bound later: used before assignment
])
def test_a_free_name_that_is_not_an_input_still_fails(fake_sandbox: Sandbox, code: str, missing: str) -> None:
    result = fake_sandbox.run(code)
    assert result.exception_type == "NameError" and f"'{missing}'" in result.exception_message, result.short()


def test_placeholders_are_not_bound_outside_hermetic_mode(fake_env: Path, tmp_path: Path) -> None:
    with Sandbox(fake_env, mode="plain", temp_root=tmp_path) as sandbox:
        result = sandbox.run("print(article_text)")
    assert result.exception_type == "NameError" and result.stand_ins == []


def test_placeholder_images_audio_and_tables_with_the_real_libraries(exec_sandbox: Sandbox) -> None:
    result = _run(exec_sandbox, """
        from PIL import Image
        from sklearn.model_selection import train_test_split
        print(Image.open(IMAGE_PATH).size, image.mode, image.size)
        print(audio.dtype, audio.shape, round(float(abs(audio).max()), 2))
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.4, random_state=0)
        print(list(X.columns), X_train.shape, y_test.shape)
    """)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["(64, 64) RGB (64, 64)", "float32 (16000,) 0.25",
                                          "['feature_0', 'feature_1', 'feature_2'] (3, 3) (2,)"]
