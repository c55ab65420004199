"""Launch a training stage as a data-parallel process group from outside it: what the flow's seed and dream
stages (and `sleepcycle.cycle.run_cycle`) do when ``distributed.nproc > 1``.

    seed_launched(cfg, snapshot, champion, workdir, log) -> Manifest     # same inputs and result as `seed`
    dream_launched(cfg, seeded, snapshot, workdir, log) -> Manifest      # same inputs and result as `dream`

Each starts ``torchrun --standalone --nproc_per_node N -m sleepcycle seed-dist|dream-dist ...`` (or
DeepSpeed's own launcher, ``distributed.launcher``) as a subprocess on local directories, so the caller
never joins the process group (`sleepcycle.distributed` is what runs inside it). The launch files sit
next to the stage's work directory, in ``<workdir>.launch/``: the resolved config (``config.yaml``), the
replay records, every rank's output (``output.log``, also streamed line by line to `say`) and rank 0's
metrics (``metrics.jsonl``, handed to `log` as they arrive). A rank that fails makes the launch raise
DistributedError with the end of the log; otherwise the manifest of the checkpoint rank 0 wrote comes back,
and the caller publishes it as it publishes the in-process result.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from sleepcycle.config import Config
from sleepcycle.distributed import DistributedError, check_zero, ds_config, free_port
from sleepcycle.dream import grew_this_cycle
from sleepcycle.manifests import Manifest
from sleepcycle.trainer import Log, noop

TAIL_LINES = 40


def launcher(cfg: Config, master_port: int | None = None) -> list[str]:
    """The launcher part of the command line, up to the module it runs: torchrun (``--standalone``: a free
    rendezvous port on this host) or DeepSpeed's launcher. Both are started with this interpreter
    (``python -m torch.distributed.run`` is ``torchrun``) so the ranks see the caller's environment,
    whatever is on PATH."""
    d = cfg.distributed
    if d.launcher == "torchrun":
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={d.nproc}"]
        return [*torchrun, "-m", "sleepcycle"]
    # the deepspeed launcher listens on 29500 unless told otherwise: two stages on one host would clash
    port = master_port or free_port()
    runner = [sys.executable, "-m", "deepspeed.launcher.runner", f"--num_gpus={d.nproc}", f"--master_port={port}"]
    return [*runner, "--module", "sleepcycle"]


def _options(**paths: object) -> list[str]:
    """``--name value`` for every option given (None left out), ``snake_case`` as ``--kebab-case``."""
    out: list[str] = []
    for name, value in paths.items():
        if value is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    return out


def seed_command(
    cfg: Config,
    config_file: Path,
    snapshot: Path,
    champion: Path,
    out: Path,
    replay: Path | None = None,
    run_seed: int = 0,
    metrics: Path | None = None,
    trace: Path | None = None,
    token_budget: int | None = None,
    master_port: int | None = None,
) -> list[str]:
    """The command line of data-parallel Knowledge Seeding on ``cfg.distributed.nproc`` ranks."""
    cmd = [*launcher(cfg, master_port), "seed-dist", "--config", str(config_file)]
    cmd += _options(deepspeed=cfg.distributed.deepspeed, snapshot=snapshot, champion=champion, out=out)
    return cmd + _options(seed=run_seed, replay=replay, metrics=metrics, trace=trace, token_budget=token_budget)


def dream_command(
    cfg: Config,
    config_file: Path,
    seeded: Path,
    snapshot: Path,
    out: Path,
    run_seed: int = 0,
    metrics: Path | None = None,
    trace: Path | None = None,
    token_budget: int | None = None,
    master_port: int | None = None,
) -> list[str]:
    """The command line of Dreaming with a data-parallel consolidation on ``cfg.distributed.nproc`` ranks."""
    cmd = [*launcher(cfg, master_port), "dream-dist", "--config", str(config_file)]
    cmd += _options(deepspeed=cfg.distributed.deepspeed, seeded=seeded, snapshot=snapshot, out=out)
    return cmd + _options(seed=run_seed, metrics=metrics, trace=trace, token_budget=token_budget)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Metrics:
    """Rank 0's metrics as they arrive in a JSONL file (``--metrics``), handed to `log`."""

    def __init__(self, path: Path, log: Log):
        self.path, self.log, self.offset = path, log, 0

    def pump(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        done = data[: data.rfind(b"\n") + 1]  # complete lines only: rank 0 may be mid-write
        self.offset += len(done)
        for line in done.splitlines():
            if line.strip():
                self.log(json.loads(line))


def _launch_dir(cfg: Config, workdir: Path) -> Path:
    """A fresh ``<workdir>.launch/`` with the resolved config; `workdir` itself removed, so what comes back
    is this run's checkpoint or nothing."""
    launch = workdir.with_name(workdir.name + ".launch")
    shutil.rmtree(launch, ignore_errors=True)
    launch.mkdir(parents=True)
    shutil.rmtree(workdir, ignore_errors=True)
    (launch / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return launch


def run(
    stage: str, cmd: list[str], workdir: Path, launch: Path, log: Log = noop, say: Callable[[str], None] = _say
) -> Manifest:
    """Run a launcher command for `stage` to the end: its output to ``launch/output.log`` and `say`, rank 0's metrics to
    `log`; the manifest of the checkpoint it wrote to `workdir`, or DistributedError with the log's end."""
    src = str(Path(__file__).resolve().parents[1])  # the ranks import this very sleepcycle
    env = {**os.environ, "SLEEPCYCLE_QUIET": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    say(f"{stage}: {shlex.join(cmd)}")
    metrics, output = _Metrics(launch / "metrics.jsonl", log), launch / "output.log"
    popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    with output.open("w") as sink, popen as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sink.write(line)
                sink.flush()
                say(line.rstrip("\n"))
                metrics.pump()
            rc = proc.wait()
        except BaseException:  # cancelled or interrupted: take the ranks down too (torchrun forwards SIGTERM)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    metrics.pump()
    if rc != 0:
        tail = "\n".join(output.read_text(errors="replace").splitlines()[-TAIL_LINES:])
        raise DistributedError(f"{stage} exited with status {rc}; end of {output}:\n{tail}")
    if not (workdir / "manifest.json").is_file():
        raise DistributedError(f"the ranks exited cleanly but wrote no checkpoint to {workdir} (see {output})")
    manifest = Manifest.read(workdir)
    manifest.verify(workdir)
    return manifest.model_copy(update={"uri": str(workdir)})


def _check(cfg: Config) -> None:
    """Refuse, before starting N processes, what the ranks would refuse."""
    d = cfg.distributed
    if cfg.distill.batch_size < d.nproc:
        raise DistributedError(f"distill.batch_size={cfg.distill.batch_size} is smaller than the {d.nproc} ranks")
    check_zero(cfg, ds_config(d.deepspeed, max(1, cfg.distill.batch_size // d.nproc)))


def seed_launched(
    cfg: Config,
    snapshot: Manifest,
    champion: Manifest,
    workdir: Path,
    log: Log = noop,
    replay: Sequence[str] = (),
    run_seed: int = 0,
    say: Callable[[str], None] = _say,
    trace: Path | None = None,
    token_budget: int | None = None,
) -> Manifest:
    """`sleepcycle.seed.seed` on ``cfg.distributed.nproc`` ranks (``seed-dist``), launched as a subprocess."""
    _check(cfg)
    workdir = Path(workdir)
    launch = _launch_dir(cfg, workdir)
    replay_file = None
    if replay:  # wake JSONL; explicit ids keep repeated texts (the reader refuses duplicate ids)
        replay_file = launch / "replay.jsonl"
        replay_file.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(replay)))
    cmd = seed_command(
        cfg,
        launch / "config.yaml",
        Path(snapshot.uri),
        Path(champion.uri),
        workdir,
        replay=replay_file,
        run_seed=run_seed,
        metrics=launch / "metrics.jsonl",
        trace=trace,
        token_budget=token_budget,
    )
    return run("seed-dist", cmd, workdir, launch, log, say)


def dream_launched(
    cfg: Config,
    seeded: Manifest,
    snapshot: Manifest,
    workdir: Path,
    log: Log = noop,
    run_seed: int = 0,
    say: Callable[[str], None] = _say,
    trace: Path | None = None,
    token_budget: int | None = None,
) -> Manifest:
    """`sleepcycle.dream.dream` with its consolidation on ``cfg.distributed.nproc`` ranks (``dream-dist``),
    launched as a subprocess. The cycle that grew the model has nothing to dream into: its seeded
    checkpoint comes back unchanged, as from `dream`, and nothing is launched."""
    if grew_this_cycle(seeded):
        return seeded
    _check(cfg)
    workdir = Path(workdir)
    launch = _launch_dir(cfg, workdir)
    cmd = dream_command(
        cfg,
        launch / "config.yaml",
        Path(seeded.uri),
        Path(snapshot.uri),
        workdir,
        run_seed=run_seed,
        metrics=launch / "metrics.jsonl",
        trace=trace,
        token_budget=token_budget,
    )
    return run("dream-dist", cmd, workdir, launch, log, say)
