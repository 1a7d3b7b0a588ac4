"""`rlaif exec-env`: the package list and building a (tiny) execution environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from rlaif_code.cli import main
from rlaif_code.core.artifacts import InputError
from rlaif_code.sandbox.env import PACKAGES_FILE, ExecEnvConfig, find_exec_python, read_packages, resolve_env_path


def test_shipped_package_list_pins_the_cpu_torch() -> None:
    packages = read_packages(PACKAGES_FILE)
    assert "torch==2.13.0" in packages.required  # any other torch pulls a multi-GB CUDA build
    names = {Requirement(line).name for line in packages.required}
    assert {"transformers", "diffusers", "sentence-transformers", "huggingface_hub"} <= names
    assert "transformers<5" in packages.required  # APIBench's answers are transformers-4 code
    assert "torchaudio" in packages.unavailable and packages.unavailable["torchaudio"]


@pytest.mark.parametrize("text, message", [
    ("six\n", ":1: 'six' comes before any"),
    ("[required]\nsix\n[extras]\n", ":3: unknown section [extras]"),
    ("[required]\nsix numpy\n", ":2: one requirement per line"),
    ("[optional]\nsix\n", "no [required] packages"),
])
def test_bad_package_lists_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "packages.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_packages(path)


def test_env_path_and_missing_env_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLAIF_EXEC_ENV", str(tmp_path / "from-env"))
    assert resolve_env_path(None) == tmp_path / "from-env"
    assert resolve_env_path(str(tmp_path / "given")) == tmp_path / "given"
    with pytest.raises(InputError, match="rlaif exec-env"):
        find_exec_python(tmp_path / "nothing-here")


def test_exec_env_cli_builds_records_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One tiny package, and one optional requirement that cannot be satisfied: it must be
    # recorded as failed without failing the env.
    packages = tmp_path / "packages.txt"
    packages.write_text("[required]\nsix\n[optional]\nsix==0.0.1  # no such release\n"
                        "[unavailable]\ntorchaudio  # needs its own torch build\n")
    env = tmp_path / "env"
    args = ["exec-env", "--path", str(env), "--packages", str(packages)]
    assert main(args) == 0
    report = json.loads((env / "exec_env.json").read_text())
    assert report["installed"] == ["six"] and list(report["failed"]) == ["six==0.0.1"]
    assert report["unavailable"] == {"torchaudio": "needs its own torch build"}
    assert any(line.startswith("six==") for line in report["freeze"])
    stage = json.loads((env / "stage.json").read_text())
    assert stage["stage"] == "exec-env" and stage["config"]["packages"] == str(packages)
    capsys.readouterr()
    assert main(args) == 0
    assert "already built" in capsys.readouterr().out
    assert find_exec_python(env) == env / "bin" / "python"
    packages.write_text(packages.read_text().replace("[optional]\nsix==0.0.1  # no such release\n", ""))
    assert main(args) == 0  # an edited list installs again
    assert json.loads((env / "exec_env.json").read_text())["failed"] == {}
    assert ExecEnvConfig().optional is True
