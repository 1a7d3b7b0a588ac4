"""The pipeline's bookkeeping on stub stages (milliseconds): skip, rerun downstream, --only, --from,
stale marking, resume after a failure, and refusing another config's run directory.

Stub stages are plain functions that write a file; each test builds its own, so nothing depends
on another test or on the clock (a stage's `runs` counter says how often it ran).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlaif_code.core.artifacts import InputError
from rlaif_code.core.config import ConfigError
from rlaif_code.pipeline import Manifest, StageCall, execute

NAMES = ("first", "second", "third")


@dataclass
class Section:
    value: int = 0


class Stubs:
    """Three stages in a run directory; `fail` makes a stage raise once, after writing partial output."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.sections = {name: Section() for name in NAMES}
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.found_partial: dict[str, bool] = {}  # whether a stage started with its earlier partial output

    def stage(self, name: str) -> StageCall:
        out = self.run_dir / name

        def call() -> dict[str, int]:
            self.calls.append(name)
            self.found_partial[name] = (out / "partial").exists()
            out.mkdir(parents=True, exist_ok=True)
            (out / "partial").write_text("resumable work")
            if name in self.fail:
                self.fail.discard(name)
                raise RuntimeError(f"{name} was killed")
            (out / "result").write_text(str(self.sections[name].value))
            return {"value": self.sections[name].value}

        return StageCall(name, self.sections[name], call, [out])

    def run(self, config_file: str = "a.yaml", force: bool = False, **flags: str) -> list[str]:
        self.calls = []
        manifest = Manifest.open(self.run_dir, {"sections": [s.value for s in self.sections.values()]}, 0,
                                 config_file, force)
        execute([self.stage(name) for name in NAMES], manifest, **flags)
        return self.calls

    def entry(self, name: str) -> dict:
        return Manifest.open(self.run_dir, {}, 0, "a.yaml", True).entry(name)


@pytest.fixture
def stubs(tmp_path: Path) -> Stubs:
    return Stubs(tmp_path / "run")


def test_a_finished_run_is_skipped(stubs: Stubs) -> None:
    assert stubs.run() == list(NAMES)
    assert stubs.run() == []
    assert all(stubs.entry(name)["runs"] == 1 and stubs.entry(name)["status"] == "done" for name in NAMES)


def test_a_changed_section_reruns_it_and_everything_after_it(stubs: Stubs) -> None:
    stubs.run()
    stubs.sections["second"].value = 7
    assert stubs.run() == ["second", "third"]
    assert (stubs.run_dir / "second" / "result").read_text() == "7"
    assert [stubs.entry(name)["runs"] for name in NAMES] == [1, 2, 2]


def test_only_reruns_one_stage_and_marks_the_later_ones_stale(stubs: Stubs) -> None:
    stubs.run()
    assert stubs.run(only_stage="second") == ["second"]
    assert stubs.entry("second")["status"] == "done" and stubs.entry("third")["status"] == "stale"
    assert stubs.entry("first")["status"] == "done"
    assert stubs.run() == ["third"]  # a stale stage is never taken as done


def test_from_reruns_a_stage_and_those_after_it(stubs: Stubs) -> None:
    stubs.run()
    assert stubs.run(from_stage="second") == ["second", "third"]
    assert [stubs.entry(name)["runs"] for name in NAMES] == [1, 2, 2]


def test_an_interrupted_stage_resumes_from_what_it_wrote(stubs: Stubs) -> None:
    stubs.fail.add("second")
    with pytest.raises(RuntimeError, match="killed"):
        stubs.run()
    assert stubs.entry("second")["status"] == "failed" and stubs.entry("third") == {}
    partial = stubs.run_dir / "second" / "partial"
    partial.write_text("kept for the resume")
    assert stubs.run() == ["second", "third"]
    assert stubs.found_partial["second"]  # the pipeline kept it; the stage resumed from it
    assert stubs.entry("second")["status"] == "done" and stubs.entry("second")["runs"] == 2


@pytest.mark.parametrize("flag", ["only_stage", "from_stage"])
def test_an_interrupted_stage_named_by_only_or_from_resumes_and_a_finished_one_starts_over(stubs: Stubs,
                                                                                          flag: str) -> None:
    stubs.fail.add("second")
    with pytest.raises(RuntimeError, match="killed"):
        stubs.run()
    assert stubs.run(**{flag: "second"})[0] == "second"
    assert stubs.found_partial["second"] and stubs.entry("second")["status"] == "done"
    stubs.run(**{flag: "second"})  # now done: a rerun starts from an empty directory
    assert not stubs.found_partial["second"]
    if flag == "from_stage":
        assert not stubs.found_partial["third"]  # a later stage's input was remade: it never resumes


def test_a_missing_output_reruns_a_done_stage(stubs: Stubs) -> None:
    stubs.run()
    shutil.rmtree(stubs.run_dir / "third")
    assert stubs.run() == ["third"]


def test_another_configs_run_dir_is_refused_unless_forced(stubs: Stubs) -> None:
    stubs.run()
    with pytest.raises(InputError, match="--force"):
        stubs.run(config_file="b.yaml")
    assert stubs.run(config_file="b.yaml", force=True) == []


def test_an_unknown_stage_name_is_an_error(stubs: Stubs) -> None:
    with pytest.raises(ConfigError, match="--only 'fourth'"):
        stubs.run(only_stage="fourth")
