from rlaif_code.data.parse import FIELDS, format_answer, parse_output

FULL = {"domain": "Image Classification", "api_call": "AutoModel.from_pretrained('a/b')",
        "provider": "Hugging Face Transformers", "explanation": "1. Load it.\n2. Use it.",
        "code": "from transformers import AutoModel\nmodel = AutoModel.from_pretrained('a/b')"}


def test_round_trip_of_the_canonical_format():
    parsed = parse_output(format_answer(FULL))
    assert parsed.fields == FULL and parsed.found == list(FIELDS) and parsed.style == "angle"


def test_missing_fields_are_empty():
    parsed = parse_output("<<<api_call>>>: f(1)\n<<<code>>>: f(1)")
    assert parsed.fields["api_call"] == "f(1)" and parsed.fields["domain"] == "" and parsed.fields["explanation"] == ""


def test_reordered_fields():
    parsed = parse_output("<<<code>>>: x = f()\n<<<domain>>>: D\n<<<api_call>>>: f()")
    assert parsed.fields["code"] == "x = f()" and parsed.fields["domain"] == "D" and parsed.fields["api_call"] == "f()"


def test_repeated_field_keeps_the_first():
    parsed = parse_output("<<<api_call>>>: first()\n<<<api_call>>>: second()\n<<<code>>>: c")
    assert parsed.fields["api_call"] == "first()" and parsed.repeated == ["api_call"]


def test_truncated_output_keeps_what_is_there():
    parsed = parse_output("<<<domain>>>: Audio\n<<<api_call>>>: pipeline('asr', model=")
    assert parsed.fields["api_call"] == "pipeline('asr', model=" and parsed.fields["code"] == ""


def test_a_new_instruction_ends_the_answer():
    parsed = parse_output("<<<code>>>: x = 1\n###Instruction: another task <<<api_call>>>: g()")
    assert parsed.fields["code"] == "x = 1" and parsed.fields["api_call"] == ""


def test_tensorflow_comma_separated_style():
    text = ("<<<domain>>>: Image feature vector, <<<api_call>>>: hub.KerasLayer('u'), <<<api_provider>>>: "
            "TensorFlow Hub, <<<explanation>>>: e. <<<code>>>: import tensorflow_hub as hub")
    parsed = parse_output(text)
    assert parsed.fields["domain"] == "Image feature vector" and parsed.fields["api_call"] == "hub.KerasLayer('u')"
    assert parsed.fields["provider"] == "TensorFlow Hub"


def test_torchhub_dict_style_with_unescaped_inner_quotes():
    text = ("{'domain': 'Classification', 'api_call': 'model = torch.hub.load('a/b', 'c', pretrained=True)', "
            "'api_provider': 'PyTorch', 'explanation': 'Load it.', 'code': \"import torch\\nm = 1\"}")
    parsed = parse_output(text)
    assert parsed.style == "dict"
    assert parsed.fields["api_call"] == "model = torch.hub.load('a/b', 'c', pretrained=True)"
    assert parsed.fields["provider"] == "PyTorch" and parsed.fields["code"].startswith("import torch")


def test_gorilla_double_escaped_newlines_are_restored():
    parsed = parse_output("<<<domain>>>: D\\n<<<api_call>>>: f()\\n<<<code>>>: a = 1\\nb = 2")
    assert parsed.fields["api_call"] == "f()" and parsed.fields["code"] == "a = 1\nb = 2"


def test_empty_and_prose_answers():
    assert parse_output("").fields == {name: "" for name in FIELDS}
    prose = parse_output("I think you should use a model.")
    assert prose.style == "none" and prose.found == []
