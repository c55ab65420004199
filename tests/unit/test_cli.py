"""The CLI: help a new user understands, one clear line on bad input, real commands on the tiny world."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args, env_home=None):
    env = None
    if env_home is not None:
        import os

        env = {**os.environ, "SLEEPCYCLE_HOME": str(env_home), "SLEEPCYCLE_QUIET": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sleepcycle", *args], capture_output=True, text=True, cwd=ROOT, env=env
    )


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("world", "pretrain", "eval", "bench", "demo"):
        assert cmd in out.stdout


def test_bad_arguments_give_one_clear_line_not_a_traceback(tmp_path):
    cases = [
        run("bench", "--method", "nope", "--config", "tiny", env_home=tmp_path),
        run("pretrain", "--config", "nosuchprofile", env_home=tmp_path),
        run("pretrain", "--config", "tiny", "--set", "distill.stepz=3", env_home=tmp_path),
        run("eval", "--model", str(tmp_path), "--probes", str(tmp_path / "none.jsonl"), env_home=tmp_path),
    ]
    for out in cases:
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr
        lines = [x for x in out.stderr.strip().splitlines() if x.startswith("sleepcycle: error")]
        assert len(lines) == 1, out.stderr
    assert "unknown method 'nope'" in cases[0].stderr
    assert "no config profile 'nosuchprofile'" in cases[1].stderr
    assert "distill.stepz" in cases[2].stderr


def test_world_export_then_eval_on_the_tiny_model(tmp_path):
    out = run("world", "export", "--out", str(tmp_path / "w"), "--config", "tiny", env_home=tmp_path)
    assert out.returncode == 0, out.stderr
    probes = tmp_path / "w" / "day0.probes.jsonl"
    assert probes.exists() and (tmp_path / "w" / "day1.wake.jsonl").exists()
    first = json.loads(probes.read_text().splitlines()[0])
    assert {"question", "answer", "aliases", "kind"} == set(first)
    pre = run("pretrain", "--config", "tiny", env_home=tmp_path)
    assert pre.returncode == 0, pre.stderr
    ckpt = json.loads(pre.stdout)["checkpoint"]
    ev = run("eval", "--model", ckpt, "--probes", str(probes), "--json", env_home=tmp_path)
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert 0.0 <= result["accuracy"] <= 1.0 and result["n"] > 0


def test_a_bad_config_is_refused_before_torch_is_loaded():
    # The check is cheap; loading torch, transformers and the stages is not: a typo must not wait for them.
    code = (
        "import sys; from sleepcycle.cli import main; "
        "rc = main(['bench', '--method', 'sleep', '--set', 'distill.bogus=1']); "
        "print(rc, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr
    assert "distill.bogus" in out.stderr and "Traceback" not in out.stderr


def test_the_demo_dream_row_shows_the_drift_seeding_left_and_dreaming_added():
    from sleepcycle.demo import _dream_row
    from sleepcycle.manifests import Manifest

    m = {
        "dream/generated": 210,
        "dream/kept": 32,
        "dream/reward_rate": 0.5,
        "dream/distinct_2": 0.7,
        "dream/kl_drift": 0.36,
        "dream/seeded_kl_drift": 0.31,
        "dream/dreams_per_s": 33.0,
    }
    row = lambda m, **meta: _dream_row(2, Manifest(kind="checkpoint", metrics=m, meta=meta))  # noqa: E731
    assert row(m) == (["2", "210", "32", "0.50", "0.70", "0.310→0.360", "33.0"], "")
    halved = "KL drift 0.4000 > budget 0.3600: reverted and halved lr to 0.0015"
    assert row(m, drift_note=halved)[1] == halved, "the budget acted: the note says how"
    stopped = "KL drift 0.9000 > budget 0.3600: stopped at step 40"
    assert row({**m, "dream/kl_drift": 0.31}, drift_note=stopped)[1] == (
        stopped + "; every step reverted, so Dreaming left the seeded weights unchanged"
    )
    del m["dream/seeded_kl_drift"]  # a candidate dreamed before the seeded drift was recorded
    assert row(m)[0][5] == "0.360"
    assert row({"seed/steps": 3}) is None  # a cycle without Dreaming has no row
