from rlaif_code.core import precision

FLAGS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f {extra}\nbugs\t\t: spectre\n"


def test_amx_flag_is_read_from_the_flags_line_only():
    assert precision.amx_bf16_in_cpuinfo(FLAGS.format(extra="amx_tile amx_bf16"))
    assert not precision.amx_bf16_in_cpuinfo(FLAGS.format(extra="amx_tile"))
    assert not precision.amx_bf16_in_cpuinfo("model name\t: amx_bf16 lookalike\n" + FLAGS.format(extra=""))


def test_auto_bf16_on_cpu_follows_the_amx_flag():
    assert precision.bf16_pays("cpu") == precision.cpu_has_amx_bf16()
    assert not precision.bf16_pays("mps")
