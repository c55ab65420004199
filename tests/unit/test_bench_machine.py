"""A bench result names the hardware it ran on, down to the vector instruction sets (a VM can move to a
host without AVX-512 between two runs, and the model name alone does not show it)."""

from sleepcycle.bench import cpu_info, machine

CPUINFO = """processor\t: {n}
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: {model}
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 {extra}
"""


def test_cpu_family_model_and_vector_isa_are_read_from_cpuinfo(tmp_path):
    genoa, milan = tmp_path / "genoa", tmp_path / "milan"
    genoa.write_text("\n".join(CPUINFO.format(n=n, model=17, extra="avx512f avx512_bf16") for n in (0, 1)))
    milan.write_text(CPUINFO.format(n=0, model=1, extra=""))
    assert cpu_info(genoa) == {
        "cpu_model": "AMD EPYC",
        "cpu_family_model": "25/17",
        "cpu_isa": ["avx2", "fma", "avx512f", "avx512_bf16"],
    }
    assert cpu_info(milan) == {"cpu_model": "AMD EPYC", "cpu_family_model": "25/1", "cpu_isa": ["avx2", "fma"]}
    missing = cpu_info(tmp_path / "none")
    assert missing["cpu_family_model"] is None and missing["cpu_isa"] == [] and missing["cpu_model"]


def test_machine_records_the_cpu_beside_the_software():
    m = machine()
    assert {"cpu_model", "cpu_family_model", "cpu_isa", "cpus", "torch_threads", "torch", "transformers"} <= set(m)
    assert isinstance(m["cpu_isa"], list)
