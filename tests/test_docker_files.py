"""docker/: what can be checked without a Docker engine.

The compose file's services, token propagation, 127.0.0.1-only port mappings and password-free
database URLs; that every service command is a real `mlflow` / `ray` / `lll` command with options
that exist (checked against the installed CLIs' own option lists); the Dockerfile's install order
and build arguments; the cluster-launcher YAML against Ray's own config schema. `docker compose
config` runs too where the Compose plugin is installed.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from pipeline.tracking import mask_url

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def services(compose: dict) -> dict:
    return compose["services"]


def test_services_and_scalable_workers(compose):
    s = services(compose)
    assert set(s) == {"postgres", "mlflow", "ray-head", "ray-worker"}
    worker = s["ray-worker"]
    # `--scale ray-worker=N` needs no fixed name and no host port.
    assert "container_name" not in worker and "ports" not in worker
    assert "--address=ray-head:6379" in worker["command"] and "--block" in worker["command"]
    assert s["ray-head"]["command"][:3] == ["ray", "start", "--head"]
    assert "--port=6379" in s["ray-head"]["command"]
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"
    for name in ("mlflow", "ray-head", "ray-worker"):
        assert s[name]["image"] == "lll:latest" and s[name]["build"]["dockerfile"] == "docker/Dockerfile"


def test_ray_token_reaches_head_workers_and_driver(compose):
    s = services(compose)
    for name in ("ray-head", "ray-worker"):  # the driver runs on the head (`compose exec ray-head lll search`)
        env = s[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert re.fullmatch(r"\$\{RAY_AUTH_TOKEN:\?.+\}", env["RAY_AUTH_TOKEN"]), f"{name}: token must be required"
    assert "ray-head" in compose["services"]["ray-head"]["healthcheck"]["test"][-1]
    assert "exec ray-head lll search --ray-address ray-head:6379" in (DOCKER / "compose.yaml").read_text()


def test_host_ports_bind_to_loopback_only(compose):
    published = []
    for name, svc in services(compose).items():
        for mapping in svc.get("ports", []):
            published.append((name, mapping))
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond 127.0.0.1"
    assert {n for n, _ in published} == {"mlflow", "ray-head"}  # MLflow UI, Ray dashboard
    assert "ports" not in services(compose)["postgres"]


def test_postgres_holds_optuna_and_mlflow_without_passwords_in_urls(compose):
    s = services(compose)
    pg = s["postgres"]["environment"]
    assert pg["POSTGRES_DB"] == "optuna" and re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?.+\}", pg["POSTGRES_PASSWORD"])
    assert "./initdb:/docker-entrypoint-initdb.d:ro" in s["postgres"]["volumes"]
    sql = (DOCKER / "initdb" / "10-mlflow-db.sql").read_text()
    assert re.search(r"^CREATE DATABASE mlflow OWNER lll;", sql, re.MULTILINE)
    ml = s["mlflow"]["environment"]
    store = ml["MLFLOW_BACKEND_STORE_URI"]
    assert store.startswith("postgresql+psycopg://") and store.endswith("@postgres:5432/mlflow")
    assert mask_url(store) == store, "the store URL must not carry the password (it comes as PGPASSWORD)"
    assert ml["PGPASSWORD"] == pg["POSTGRES_PASSWORD"] == s["ray-head"]["environment"]["PGPASSWORD"]
    cmd = s["mlflow"]["command"]
    assert cmd[cmd.index("--artifacts-destination") + 1] == "/mlartifacts"
    assert "mlartifacts:/mlartifacts" in s["mlflow"]["volumes"]
    assert {"pgdata", "mlartifacts", "results"} <= set(compose["volumes"])
    allowed = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in allowed, "the driver reaches MLflow as http://mlflow:5000"


def _click_options(command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


@pytest.mark.slow  # imports the mlflow and ray command lines
def test_service_commands_are_real_cli_commands_and_options(compose):
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    assert {"mlflow", "ray", "lll"} <= scripts
    from mlflow.cli import cli as mlflow_cli
    from ray.scripts.scripts import cli as ray_cli

    s = services(compose)
    ml = s["mlflow"]["command"]
    assert ml[:2] == ["mlflow", "server"]
    assert set(_flags(ml[2:])) <= _click_options(mlflow_cli.commands["server"])
    ray_start = _click_options(ray_cli.commands["start"])
    for name in ("ray-head", "ray-worker"):
        cmd = s[name]["command"]
        assert cmd[:2] == ["ray", "start"] and set(_flags(cmd[2:])) <= ray_start, name
    hc = s["ray-head"]["healthcheck"]["test"]
    assert hc[1:3] == ["ray", "health-check"] and set(_flags(hc[3:])) <= _click_options(
        ray_cli.commands["health-check"]
    )
    assert "MLFLOW_BACKEND_STORE_URI" in {p.envvar for p in mlflow_cli.commands["server"].params}


def test_every_required_and_optional_setting_is_in_env_example(compose):
    text = (DOCKER / "compose.yaml").read_text() + (DOCKER / "compose.gpu.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    optional = set(re.findall(r"\$\{(\w+):-", text))
    example = (DOCKER / ".env.example").read_text()
    assert required == {"RAY_AUTH_TOKEN", "POSTGRES_PASSWORD"}
    for var in required:
        assert re.search(rf"^{var}=\S+", example, re.MULTILINE), var
    for var in optional:
        assert re.search(rf"^# {var}=", example, re.MULTILINE), var
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def test_dockerfile_installs_like_the_readme():
    lines = [ln.strip() for ln in (DOCKER / "Dockerfile").read_text().splitlines()]
    code = [ln for ln in lines if ln and not ln.startswith("#")]
    assert code[0] == "ARG BASE_IMAGE=python:3.11-slim-bookworm" and code[1] == "FROM ${BASE_IMAGE}"
    assert any(ln.startswith("ARG TORCH_SPEC=") for ln in code)
    torch_at = next(i for i, ln in enumerate(code) if '"${TORCH_SPEC}"' in ln)
    lll_at = next(i for i, ln in enumerate(code) if "pip install -e ." in ln)
    assert torch_at < lll_at, "torch must be installed before lll (as the README/Makefile do)"
    # Every package pyproject ships is copied into the image.
    include = re.search(r"^include = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    packages = {p.strip().strip('"').rstrip("*") for p in include.group(1).split(",")}
    copied = {m.group(1) for ln in code if (m := re.fullmatch(r"COPY (\w+) \./\1", ln))}
    assert packages == copied
    users = [ln for ln in code if ln.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0"), "the image must not run as root"


def test_gpu_override_reserves_gpus_for_workers_only():
    gpu = yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text())
    assert set(gpu["services"]) == {"ray-worker"}
    dev = gpu["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"]


def test_cluster_launcher_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((DOCKER / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(raw)))
    assert "--env RAY_AUTH_MODE=token" in raw["docker"]["run_options"]
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--dashboard-host=127.0.0.1" in " ".join(raw["head_start_ray_commands"])
    broken = copy.deepcopy(raw)
    broken["docker"]["no_such_key"] = 1
    with pytest.raises(Exception, match="no_such_key"):
        validate_config(prepare_config(broken))


def test_docker_compose_config_accepts_the_files(tmp_path):
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the Docker Compose plugin (`docker compose`) is not installed here")
    env_file = tmp_path / "test.env"
    env_file.write_text("RAY_AUTH_TOKEN=t0ken\nPOSTGRES_PASSWORD=pw\n")
    base = [docker, "compose", "--env-file", str(env_file), "-f", str(DOCKER / "compose.yaml")]
    for extra in ([], ["-f", str(DOCKER / "compose.gpu.yaml")]):
        res = subprocess.run([*base, *extra, "config", "-q"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
