"""The core stays free of orchestration, tracking, storage and UI libraries; `platform/` never shadows
the standard library's `platform` module."""

import subprocess
import sys
from pathlib import Path

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
    code = (
        "import sys\n"
        + "".join(f"import sleepcycle.{m}\n" for m in CORE)
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {BANNED!r})\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"core imported: {out.stdout.strip()}"


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
    assert {"tiny", "default"} <= set(profiles)
    for name in profiles:
        assert load_config(name).profile == name
