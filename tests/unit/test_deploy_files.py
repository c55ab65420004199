"""The deployment files agree with each other, hold no secrets, and pass the tools that will read them.

Covers docker/compose.yaml, docker/.env.example, the Dockerfiles, infra/prefect/*.json and infra/k8s/*.yaml.
Offline and fast: YAML/JSON parsing, Prefect's own work-pool validation and templating, and the store's
settings parser. Where a Compose v2+ CLI exists (`bash .ci/compose-config` installs one), it also runs
`docker compose config -q`; without one those tests skip and say so.

    python -m pytest tests/unit/test_deploy_files.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
PREFECT_DIR = ROOT / "infra" / "prefect"
K8S = ROOT / "infra" / "k8s"

# Environment variables whose values are credentials: in compose they must come from docker/.env.
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|_USER$")
REF = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
REQUIRED_REF = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]*\}$")
# What the application reads (sleepcycle.store.settings, flows, dashboard).
APP_ENV = {
    "MLFLOW_TRACKING_URI",
    "PREFECT_API_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "SLEEPCYCLE_S3_ENDPOINT",
    "SLEEPCYCLE_S3_BUCKET",
    "SLEEPCYCLE_HOME",
    "SLEEPCYCLE_LINE",
}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def one_shot(service: dict) -> bool:
    return service.get("restart") == "no"


def env_example() -> dict[str, str]:
    """docker/.env.example as a dict; `# NAME=value` lines count as documented optional variables."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            values[m.group(1)] = m.group(2)
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message} substitution, enough for these files."""

    def sub(m: re.Match) -> str:
        name, op, arg = m.group("name", "op", "arg")
        if env.get(name):
            return env[name]
        if op in (":?", "?"):
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return REF.sub(sub, value).replace("$$", "$")


def k8s_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def k8s_object(kind: str, name: str) -> dict:
    for doc in k8s_docs("gpu-worker.yaml") + k8s_docs("secret.example.yaml"):
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in infra/k8s")


def template(name: str) -> dict:
    return json.loads((PREFECT_DIR / name).read_text())


def script_of(service: dict) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else "\n".join(command)


# --- docker/compose.yaml ---


def test_every_service_is_health_checked_or_a_one_shot_job():
    for name, service in services().items():
        if one_shot(service):
            # A job that exits has no health to check; dependents wait for it to succeed instead.
            assert "ports" not in service, f"{name}: a one-shot job publishes no ports"
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test must be an exec form"


def test_dependencies_wait_for_health_not_for_start():
    svc = services()
    waited_on = set()
    for name, service in svc.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs the long form with a condition"
        for target, spec in depends.items():
            expected = "service_completed_successfully" if one_shot(svc[target]) else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {target}: condition must be {expected}"
            waited_on.add(target)
    assert {"postgres", "minio", "minio-init", "mlflow", "prefect-server"} <= waited_on


def test_the_stack_has_the_issue_8_services():
    svc = services()
    assert set(svc) >= {"minio", "minio-init", "postgres", "mlflow", "prefect-server", "prefect-worker", "dashboard"}
    mlflow = script_of(svc["mlflow"])
    assert "--artifacts-destination=s3://${SLEEPCYCLE_S3_BUCKET:-sleepcycle}/mlflow" in mlflow
    assert svc["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert svc["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    prefect_db = svc["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://") and prefect_db.endswith("@postgres:5432/prefect")
    assert "prefect\nworker\nstart\n--pool=sleepcycle\n" in script_of(svc["prefect-worker"])
    assert svc["prefect-worker"]["stop_signal"] == "SIGINT"
    dashboard = script_of(svc["dashboard"])
    assert dashboard.startswith("streamlit\nrun\ndashboard/app.py\n")
    assert "--server.address=0.0.0.0" in dashboard and "--server.headless=true" in dashboard
    # MLflow and Prefect migrate separately: the init script creates the second database.
    assert "CREATE DATABASE prefect;" in (DOCKER / "postgres" / "init-databases.sql").read_text()


def test_minio_init_creates_a_versioned_bucket_before_anyone_uses_it():
    svc = services()
    init = svc["minio-init"]
    assert "minio/mc:" in init["image"]
    lines = [line.strip() for line in script_of(init).splitlines()]
    made = [line for line in lines if line.startswith("mc mb ")]
    versioned = [line for line in lines if line.startswith("mc version enable ")]
    assert made and versioned, "minio-init must create the bucket and enable versioning"
    target = '"local/$$SLEEPCYCLE_S3_BUCKET"'
    assert made[0].endswith(target) and versioned[0].endswith(target)
    assert lines.index(made[0]) < lines.index(versioned[0])
    assert any(line.startswith("mc version info ") and "grep -q enabled" in line for line in lines)
    # The bucket it versions is the one the app and MLflow use.
    assert init["environment"]["SLEEPCYCLE_S3_BUCKET"] == compose()["x-app-env"]["SLEEPCYCLE_S3_BUCKET"]
    for name in ("mlflow", "prefect-worker", "dashboard"):
        assert svc[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_no_secret_is_hard_coded():
    doc = compose()
    blocks = {"x-app-env": doc["x-app-env"]} | {n: s.get("environment", {}) for n, s in doc["services"].items()}
    for where, env in blocks.items():
        assert isinstance(env, dict), f"{where}: use the mapping form of environment"
        for key, value in env.items():
            if SECRET_KEY.search(key):
                assert REQUIRED_REF.match(str(value)), f"{where}.{key}: must be a required ${{VAR:?...}}"
            if "://" in str(value) and "@" in str(value):
                userinfo = str(value).split("://", 1)[1].rsplit("@", 1)[0]
                assert REF.sub("", userinfo) == ":", f"{where}.{key}: credentials in a URL must be ${{VARS}}"
                assert all(m.group("op") == ":?" for m in REF.finditer(userinfo)), f"{where}.{key}: required refs"
    # The template's secret values appear in no file that ships: they exist only in docker/.env. (User names
    # such as POSTGRES_USER=sleepcycle are required refs above, but as words they appear everywhere.)
    secrets = {v for k, v in env_example().items() if SECRET_KEY.search(k) and not k.endswith("_USER") and v}
    secrets |= {env_example()["MINIO_ROOT_USER"]}
    shipped = [COMPOSE, DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu", *PREFECT_DIR.glob("*.json")]
    shipped += [K8S / "gpu-worker.yaml"]
    for path in shipped:
        text = path.read_text()
        for secret in secrets:
            assert secret not in text, f"{path.relative_to(ROOT)} contains a value from docker/.env.example"


def test_env_template_documents_every_variable_compose_reads():
    documented = env_example()
    # From the parsed file, so that comments do not count.
    referenced = {m.group("name"): m.group("op") for m in REF.finditer(json.dumps(compose()))}
    missing = sorted(set(referenced) - set(documented))
    assert not missing, f"docker/.env.example does not mention {missing}"
    required = {name for name, op in referenced.items() if op == ":?"}
    set_in_template = {m.group(1) for m in re.finditer(r"^([A-Z][A-Z0-9_]*)=.+$", ENV_EXAMPLE.read_text(), re.M)}
    assert required <= set_in_template, f"required but unset in the template: {sorted(required - set_in_template)}"


def test_real_env_file_is_git_ignored():
    assert ".env" in (DOCKER / ".gitignore").read_text().split()
    for ignore in ("Dockerfile.dockerignore", "Dockerfile.gpu.dockerignore"):
        assert "docker/.env" in (DOCKER / ignore).read_text().split(), f"{ignore}: docker/.env enters the image"
    if shutil.which("git") and (ROOT / ".git").exists():
        check = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
        assert check.returncode == 0, "git would commit docker/.env"


def test_compose_env_is_what_the_store_reads():
    from sleepcycle.store.settings import load

    values = {k: v for k, v in env_example().items() if v}
    app_env = {k: interpolate(str(v), values) for k, v in compose()["x-app-env"].items()}
    assert set(app_env) == APP_ENV
    dashboard = services()["dashboard"]["environment"]
    assert "SLEEPCYCLE_APPROVER_TOKEN" in dashboard
    assert "SLEEPCYCLE_APPROVER_TOKEN" not in services()["prefect-worker"]["environment"]
    settings = load(app_env)
    assert (settings.s3_endpoint, settings.s3_secure) == ("minio:9000", False)
    assert settings.s3_bucket == values["SLEEPCYCLE_S3_BUCKET"]
    assert settings.line == values["SLEEPCYCLE_LINE"]
    assert settings.tracking_uri == "http://mlflow:5000"


def compose_cli() -> list[str] | None:
    """A Compose v2+ CLI: the docker plugin, a standalone docker-compose, or the one .ci/compose-config installs."""
    plugin = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins" / "docker-compose"
    for cli in (["docker", "compose"], ["docker-compose"], [str(plugin)]):
        if not shutil.which(cli[0]):
            continue
        out = subprocess.run([*cli, "version", "--short"], capture_output=True, text=True)
        m = re.match(r"v?(\d+)\.", out.stdout.strip())
        if out.returncode == 0 and m and int(m.group(1)) >= 2:
            return cli
    return None


def run_compose_config(cli: list[str], env_file: Path) -> subprocess.CompletedProcess:
    # A clean environment: only the env file supplies variables, as on a fresh server.
    env = {"PATH": os.environ["PATH"], "HOME": str(Path.home())}
    if "DOCKER_CONFIG" in os.environ:
        env["DOCKER_CONFIG"] = os.environ["DOCKER_CONFIG"]
    command = [*cli, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def test_compose_config_accepts_the_file():
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Compose v2+ CLI here (no Docker engine needed): `bash .ci/compose-config` installs one")
    result = run_compose_config(cli, ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_compose_config_refuses_missing_secrets(tmp_path):
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Compose v2+ CLI here (no Docker engine needed): `bash .ci/compose-config` installs one")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = run_compose_config(cli, empty)
    assert result.returncode != 0
    assert "required variable POSTGRES_PASSWORD is missing" in result.stderr


# --- Dockerfiles ---


def dockerfile_arg(path: Path, name: str) -> str:
    m = re.search(rf"^ARG {name}=(\S+)$", path.read_text(), re.M)
    assert m, f"{path.name}: no ARG {name}"
    return m.group(1)


def test_dockerfiles_install_what_pyproject_declares():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_range = next(Requirement(r) for r in project["dependencies"] if r.startswith("torch")).specifier
    for name, extras in (("Dockerfile", {"orchestration", "tracking", "ui"}), ("Dockerfile.gpu", {"gpu"})):
        path = DOCKER / name
        declared = set(dockerfile_arg(path, "EXTRAS").split(","))
        assert declared <= set(project["optional-dependencies"]), f"{name}: unknown extras"
        assert extras <= declared
        assert torch_range.contains(dockerfile_arg(path, "TORCH_VERSION")), f"{name}: torch outside {torch_range}"
    assert "download.pytorch.org/whl/cpu" in dockerfile_arg(DOCKER / "Dockerfile", "TORCH_INDEX_URL")


def test_config_files_open_with_the_command_that_uses_them():
    files = [
        COMPOSE,
        ENV_EXAMPLE,
        DOCKER / "Dockerfile",
        DOCKER / "Dockerfile.gpu",
        DOCKER / "postgres" / "init-databases.sql",
        K8S / "gpu-worker.yaml",
        K8S / "secret.example.yaml",
    ]
    for path in files:
        head = path.read_text().splitlines()[:6]
        assert head[0].startswith(("#", "--")), f"{path.relative_to(ROOT)}: open with a comment"
        assert any(cmd in "\n".join(head) for cmd in ("docker ", "kubectl ", "bash ")), path
    for name, command in (
        ("process-job-template.json", "prefect work-pool create sleepcycle --type process"),
        ("kubernetes-job-template.json", "prefect work-pool create sleepcycle-k8s --type kubernetes"),
    ):
        assert command in template(name)["variables"]["$comment"]


# --- infra/prefect ---


def test_work_pool_templates_pass_prefect_validation():
    actions = pytest.importorskip("prefect.server.schemas.actions")
    from prefect.workers.process import ProcessWorker

    actions.WorkPoolCreate(name="sleepcycle", type="process", base_job_template=template("process-job-template.json"))
    actions.WorkPoolCreate(
        name="sleepcycle-k8s", type="kubernetes", base_job_template=template("kubernetes-job-template.json")
    )
    default = ProcessWorker.get_default_base_job_template()
    ours = template("process-job-template.json")
    assert ours["job_configuration"] == default["job_configuration"]
    assert set(default["variables"]["properties"]) <= set(ours["variables"]["properties"])


def rendered_gpu_job() -> dict:
    """The Job the worker would submit with the template's defaults (Prefect's own templating)."""
    templating = pytest.importorskip("prefect.utilities.templating")
    tpl = template("kubernetes-job-template.json")
    defaults = {k: v["default"] for k, v in tpl["variables"]["properties"].items() if "default" in v}
    return templating.apply_values(tpl["job_configuration"], defaults)["job_manifest"]


def test_kubernetes_template_gives_each_run_a_gpu_and_the_secret():
    job = rendered_gpu_job()
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (1, 1)
    pod = job["spec"]["template"]["spec"]
    assert "parallelism" not in pod and "completions" not in pod, "Job fields in the pod spec are dropped"
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    (source,) = container["envFrom"]
    assert k8s_object("Secret", source["secretRef"]["name"])
    assert pod["securityContext"]["runAsUser"] == 10001  # the images' USER
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["hf-cache"] == "/var/cache/huggingface" and mounts["sleepcycle-home"] == "/var/lib/sleepcycle"
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            claim = k8s_object("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
            assert claim["metadata"]["namespace"] == job["metadata"]["namespace"]
    account = k8s_object("ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False


# --- infra/k8s ---


def test_gpu_worker_polls_the_kubernetes_pool_with_namespaced_rights():
    deployment = k8s_object("Deployment", "sleepcycle-worker")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:3] == ["prefect", "worker", "start"]
    assert {"--pool=sleepcycle-k8s", "--type=kubernetes", "--no-create-pool-if-not-found"} <= set(args)
    assert container["image"].endswith("-kubernetes")
    secret = k8s_object("Secret", "sleepcycle-env")
    for var in container["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == "sleepcycle-env" and ref["key"] in secret["stringData"]
    binding = k8s_object("RoleBinding", "sleepcycle-worker")
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    assert binding["roleRef"]["kind"] == "Role"


def test_secret_template_carries_the_app_environment_but_no_approver_token():
    data = k8s_object("Secret", "sleepcycle-env")["stringData"]
    # SLEEPCYCLE_HOME is the image's own (a mounted claim), not a secret.
    assert APP_ENV - {"SLEEPCYCLE_HOME"} <= set(data)
    assert "SLEEPCYCLE_APPROVER_TOKEN" not in data
