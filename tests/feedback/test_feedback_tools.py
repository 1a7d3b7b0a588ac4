"""Tool checks on hand-made answers; generated code is never imported or run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from rlaif_code.core.registry import RegistryError
from rlaif_code.data.apibench import load_api_database
from rlaif_code.data.ast_match import AstMatcher
from rlaif_code.data.parse import parse_output
from rlaif_code.data.source import DataSource
from rlaif_code.feedback.checking import task_fit
from rlaif_code.feedback.tools import TOOL_CHECKS, ModuleResolver, ToolContext, clean_code, imported_modules, run_check
from rlaif_code.sandbox.tiers import SnippetVerdict

REFERENCE = {"hub": "th", "domain": "Classification",
             "instruction": "Recognize objects in an image with a deep residual network, ResNet18, from torchvision.",
             "reference_api": {
    "domain": "Classification",
    "api_call": "torch.hub.load(repo_or_dir='pytorch/vision', model='resnet18', pretrained=True)"}}


def answer(code: str, api_call: str = "torch.hub.load('pytorch/vision', 'resnet18', pretrained=True)",
           domain: str = "Classification") -> str:
    return (f"<<<domain>>>: {domain}\n<<<api_call>>>: {api_call}\n<<<api_provider>>>: PyTorch\n"
            f"<<<explanation>>>: Load ResNet-18.\n<<<code>>>: {code}")


@pytest.fixture(scope="module")
def th_matcher(gorilla_data: Path) -> AstMatcher:
    return AstMatcher(load_api_database(DataSource(gorilla_data, downloads=False), "th"), "th")


def ctx(text: str, matcher: AstMatcher | None = None, resolver: ModuleResolver | None = None,
        **services: Any) -> ToolContext:
    return ToolContext(text=text, fields=parse_output(text).fields, reference=REFERENCE, matcher=matcher,
                       resolver=resolver or ModuleResolver(), **services)


GOOD = "import torch\nmodel = torch.hub.load('pytorch/vision', 'resnet18', pretrained=True)\nmodel.eval()"


def test_registry_names_the_checks_and_rejects_unknown_ones() -> None:
    assert {"syntax", "undefined_names", "imports_resolve", "api_exists", "api_matches_reference",
            "domain_matches"} <= set(TOOL_CHECKS.names())
    with pytest.raises(RegistryError, match="unknown tool check 'pylint'"):
        TOOL_CHECKS.get("pylint")


def test_a_correct_answer_passes_every_check(th_matcher: AstMatcher) -> None:
    # executes reads the verdict the stage got from the sandbox (tested with a real one in the
    # stage's tests); here the verdict of a run that passed stands in.
    context = ctx(answer(GOOD), th_matcher, fits_task=task_fit({"th": th_matcher}, 5)["th"],
                  verdicts={GOOD: SnippetVerdict(parse=True, static=True, run=True)})
    for name in TOOL_CHECKS.names():
        assert run_check(name, context) == ("yes", None), name


def test_syntax() -> None:
    assert run_check("syntax", ctx(answer("model = load(")))[0] == "no"
    assert run_check("syntax", ctx(answer("")))[1] == "no code"
    assert run_check("syntax", ctx(answer("```python\nx = 1\n```"))) == ("yes", None)


def test_undefined_names() -> None:
    assert run_check("undefined_names", ctx(answer("import torch\ny = model(x)"))) == ("no", "undefined: model, x")
    assert run_check("undefined_names", ctx(answer("def f(:")))[0] == "unparseable"
    assert run_check("undefined_names", ctx(answer("print(len([1]))"))) == ("yes", None)


def test_imports_resolve_by_name_without_importing(tmp_path: Path) -> None:
    assert run_check("imports_resolve", ctx(answer("import surely_not_a_module_xyz\nimport torch")))[1] == (
        "not installed: surely_not_a_module_xyz")
    # A module used without import is an import error.
    assert run_check("imports_resolve", ctx(answer("model = torch.hub.load('a', 'b')"))) == (
        "no", "used without import: torch")
    assert run_check("imports_resolve", ctx(answer("x = np.zeros(3)")))[0] == "no"
    # Code with side effects is only read: the file it would write never appears.
    marker = tmp_path / "ran.txt"
    code = f"import os\nopen({str(marker)!r}, 'w').write('ran')"
    assert run_check("imports_resolve", ctx(answer(code)))[0] == "yes"
    assert run_check("undefined_names", ctx(answer(code)))[0] == "yes"
    assert not marker.exists()


def test_imports_found_even_when_code_does_not_parse() -> None:
    assert imported_modules("import torch, numpy as np\nfrom os.path import join\nx = (") == ["torch", "numpy", "os"]
    assert run_check("imports_resolve", ctx(answer("import nope_nope_mod\nx = (")))[0] == "no"


def test_resolver_in_another_interpreter_is_one_subprocess() -> None:
    resolver = ModuleResolver(sys.executable)
    resolver.prefetch(["json", "surely_not_a_module_xyz", "not an identifier"])
    assert resolver.exists("json") and not resolver.exists("surely_not_a_module_xyz")
    broken = ModuleResolver("/nonexistent/python")
    with pytest.raises(RuntimeError, match="/nonexistent/python"):
        broken.prefetch(["json"])


def test_api_checks(th_matcher: AstMatcher) -> None:
    invented = answer(GOOD, api_call="torch.hub.load('someone/nothing', 'imaginary_net')")
    assert run_check("api_exists", ctx(invented, th_matcher))[0] == "no"
    assert run_check("api_matches_reference", ctx(invented, th_matcher))[0] == "no"
    other = answer(GOOD, api_call="torch.hub.load('pytorch/vision', 'vgg11', pretrained=True)")
    assert run_check("api_exists", ctx(other, th_matcher))[0] == "yes"
    assert run_check("api_matches_reference", ctx(other, th_matcher))[0] == "no"


def test_ids_in_database_is_stricter_than_gorillas_match(th_matcher: AstMatcher) -> None:
    # Gorilla's AST match takes 'wide_resnet50' for 'wide_resnet50_2' (a substring); hubconf has no such entry.
    near = "torch.hub.load('pytorch/vision', 'wide_resnet50', pretrained=True)"
    assert run_check("api_exists", ctx(answer(GOOD, api_call=near), th_matcher))[0] == "yes"
    assert run_check("ids_in_database", ctx(answer(GOOD, api_call=near), th_matcher)) == (
        "no", "not passed so by any database API: 'wide_resnet50'")
    # The code is read too, and a value must come with the call's other values: vision's repo has no 'yolov5s'.
    code = GOOD + "\nother = torch.hub.load('pytorch/vision', 'yolov5s')"
    verdict, reason = run_check("ids_in_database", ctx(answer(code), th_matcher))
    assert verdict == "no" and "'yolov5s'" in reason
    assert run_check("ids_in_database", ctx(answer(GOOD), th_matcher)) == ("yes", None)
    # Free text and strings no database function receives are not its business.
    prose = answer(GOOD + "\nprint('wide_resnet50 is not a name')").replace("Load ResNet-18.", "It's 'resnet'.")
    assert run_check("ids_in_database", ctx(prose, th_matcher)) == ("yes", None)


def test_api_checks_need_the_database() -> None:
    with pytest.raises(RuntimeError, match="API database"):
        run_check("api_exists", ctx(answer(GOOD)))
    with pytest.raises(RuntimeError, match="API database"):
        run_check("ids_in_database", ctx(answer(GOOD)))


def test_domain_matches_is_gorillas_correct(th_matcher: AstMatcher) -> None:
    """The API the call matches must have the reference's domain; what the answer *says* its domain
    is does not count."""
    same_kind = answer(GOOD, api_call="torch.hub.load('pytorch/vision', 'vgg11', pretrained=True)",
                       domain="Segmentation")
    assert run_check("domain_matches", ctx(same_kind, th_matcher)) == ("yes", None)
    other_kind = answer(GOOD, api_call="torch.hub.load('pytorch/vision', 'deeplabv3_resnet50', pretrained=True)")
    verdict, detail = run_check("domain_matches", ctx(other_kind, th_matcher))
    assert verdict == "no" and "Semantic Segmentation" in detail
    invented = answer(GOOD, api_call="torch.hub.load('someone/nothing', 'imaginary_net')")
    assert run_check("domain_matches", ctx(invented, th_matcher))[0] == "no"


@pytest.mark.parametrize("api_call, expected", [
    ("torch.hub.load('pytorch/vision', 'resnet18', pretrained=True)", "yes"),  # positional = keyword
    ('torch.hub.load(repo_or_dir="pytorch/vision", model="resnet18", pretrained=True)', "yes"),
    ("model = torch.hub.load('pytorch/vision', 'resnet18', pretrained=True)", "yes"),  # an assignment
    ("torch.hub.load('pytorch/vision', 'resnet18')", "no"),  # pretrained left out
    ("torch.hub.load('pytorch/vision', 'resnet18', pretrained=False)", "no"),
    ("torch.hub.load('pytorch/vision', 'resnet34', pretrained=True)", "no"),
    ("torch.hub.load('pytorch/vision', 'resnet18', pretrained=True", "no"),  # does not parse
])
def test_arguments_match_reference(th_matcher: AstMatcher, api_call: str, expected: str) -> None:
    assert run_check("arguments_match_reference", ctx(answer(GOOD, api_call=api_call), th_matcher))[0] == expected


def test_answer_complete_needs_all_five_fields_and_code() -> None:
    assert run_check("answer_complete", ctx(answer(GOOD))) == ("yes", None)
    truncated = "<<<domain>>>: Classification\n<<<api_call>>>: torch.hub.load('pytorch/vision', 'resnet18')"
    verdict, detail = run_check("answer_complete", ctx(truncated))
    assert verdict == "no" and detail == "missing: provider, explanation, code"
    assert run_check("answer_complete", ctx(answer("```python\n```")))[1] == "missing: code"


def test_api_fits_task_uses_the_retriever_not_the_reference(th_matcher: AstMatcher) -> None:
    fits = task_fit({"th": th_matcher}, 5)["th"]
    unrelated = answer(GOOD, api_call="torch.hub.load('snakers4/silero-models', 'silero_tts', pretrained=True)")
    assert run_check("api_fits_task", ctx(answer(GOOD), th_matcher, fits_task=fits)) == ("yes", None)
    assert run_check("api_fits_task", ctx(unrelated, th_matcher, fits_task=fits))[0] == "no"
    with pytest.raises(RuntimeError, match="retriever"):
        run_check("api_fits_task", ctx(answer(GOOD), th_matcher))


def test_executes_reads_the_sandbox_verdict() -> None:
    failed = SnippetVerdict(parse=True, static=True, run=False, run_status="error", run_error="NameError: x")
    assert run_check("executes", ctx(answer("print(x)"), verdicts={"print(x)": failed})) == ("no", "NameError: x")
    assert run_check("executes", ctx(answer(""), verdicts={}))[1] == "no code"
    with pytest.raises(RuntimeError, match="sandbox"):
        run_check("executes", ctx(answer("print(1)")))


def test_clean_code_strips_fences() -> None:
    assert clean_code("```python\nimport torch\n```") == "import torch"
