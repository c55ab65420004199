"""The core stays free of orchestration, tracking, storage and UI libraries; `platform/` never shadows
the standard library's `platform` module."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = [
    "config",
    "world",
    "records",
    "models",
    "trainer",
    "generate",
    "pretrain",
    "evaluate",
    "experts",
    "distill",
    "snapshot",
    "seed",
    "dream",
    "gate",
    "cycle",
    "bench",
    "demo",
    "cli",
    "manifests",
    "replay",
]
BANNED = ["prefect", "mlflow", "minio", "boto3", "streamlit"]


def test_importing_the_core_pulls_in_no_banned_library():
    """The core adds no banned import of its own. Third-party dependencies may pull one in by themselves
    (accelerate, imported by transformers, loads boto3 when it is installed), so the baseline is what
    torch, transformers and peft import before any sleepcycle module is loaded."""
    code = (
        "import sys\n"
        f"banned = {BANNED!r}\n"
        "def loaded(): return {m for m in sys.modules if m.split('.')[0] in banned}\n"
        "import torch, transformers, peft, transformers.activations, transformers.modeling_utils\n"
        "before = loaded()\n"
        + "".join(f"import sleepcycle.{m}\n" for m in CORE)
        + "print(','.join(sorted(loaded() - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"core imported: {out.stdout.strip()}"


def test_core_sources_never_import_a_banned_library():
    pattern = re.compile(rf"^\s*(?:import|from)\s+({'|'.join(BANNED)})\b", re.MULTILINE)
    core = ROOT / "platform" / "sleepcycle"
    hits = [
        f"{path.relative_to(ROOT)}: {m.group(0).strip()}"
        for path in core.glob("*.py")
        for m in pattern.finditer(path.read_text())
    ]
    assert hits == []


def test_stdlib_platform_is_not_shadowed_from_the_repo_root():
    out = subprocess.run(
        [sys.executable, "-c", "import platform, uuid; print(platform.system())"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert out.stdout.strip() in {"Linux", "Darwin", "Windows"}
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_every_shipped_config_loads():
    from sleepcycle.config import CONFIG_DIR, load_config

    profiles = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"tiny", "default", "gpu"} <= set(profiles)
    for name in profiles:
        assert load_config(name).profile == name


def test_gpu_profile_takes_its_model_paths_from_the_environment_and_checks_them_at_use(monkeypatch):
    from sleepcycle import models
    from sleepcycle.config import load_config

    monkeypatch.delenv("SLEEPCYCLE_MODEL_DIR", raising=False)
    unset = load_config("gpu")  # loads: the paths are checked where they are used
    assert unset.model.path == "${SLEEPCYCLE_MODEL_DIR}/Qwen2.5-0.5B"
    with pytest.raises(models.ModelLoadError, match=r"\$\{SLEEPCYCLE_MODEL_DIR\} is not set"):
        models.load(unset.model.path)
    monkeypatch.setenv("SLEEPCYCLE_MODEL_DIR", "/models")
    cfg = load_config("gpu")
    assert (cfg.model.path, cfg.distill.student_path) == ("/models/Qwen2.5-0.5B", "/models/Qwen2.5-1.5B")
    assert (cfg.distributed.nproc, cfg.distributed.deepspeed, cfg.generation.backend) == (8, "zero2", "vllm")
    assert load_config("gpu", ["model.path=/x/m"]).model.path == "/x/m"
