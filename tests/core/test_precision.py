from rlaif_code.core import precision

FLAGS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f {extra}\nbugs\t\t: spectre\n"


def test_bf16_flags_are_read_from_the_flags_line_only():
    assert precision.native_bf16_in_cpuinfo(FLAGS.format(extra="amx_tile amx_bf16"))
    assert precision.native_bf16_in_cpuinfo(FLAGS.format(extra="avx512_bf16 avx512_vnni"))
    assert not precision.native_bf16_in_cpuinfo(FLAGS.format(extra="amx_tile"))
    assert not precision.native_bf16_in_cpuinfo("model name\t: amx_bf16 lookalike\n" + FLAGS.format(extra=""))


def test_auto_bf16_on_cpu_follows_the_bf16_flags():
    assert precision.bf16_pays("cpu") == precision.cpu_has_native_bf16()
    assert not precision.bf16_pays("mps")
