"""The production deployment files: Dockerfile, .dockerignore, deploy/ (Helm values, ConfigMap).

`docker build` is not available here, so the Dockerfile is parsed and its steps are replayed
as far as they matter: the build context it COPYs (after .dockerignore) is assembled in a
temporary directory, the package is built from exactly that context (a wheel that must hold
every module and SQL file), and the image's default command is started on a free local port
and must answer Dagster's gRPC health check.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from analytics_platform_tests.infra.processes import free_port, kill_process_group, start_process_group
from analytics_platform_tests.ops import harness

ROOT = harness.REPO_ROOT
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VALUES = ROOT / "deploy" / "values.yaml"
CONFIGMAP = ROOT / "deploy" / "configmap.yaml"
MODULE = "analytics_platform.definitions"


# ---------------------------------------------------------------------------------------
# a small Dockerfile / .dockerignore reader
# ---------------------------------------------------------------------------------------
@dataclass
class Instruction:
    name: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    instructions, buf = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment lines inside a continuation
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        full = (buf + line).strip()
        buf = ""
        name, _, args = full.partition(" ")
        instructions.append(Instruction(name.upper(), " ".join(args.split())))
    return instructions


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.name == "ENV":
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', ins.args):
                env[key] = value.strip('"')
    return env


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), text)


def exec_form(ins: Instruction) -> list[str]:
    assert ins.args.startswith("["), f"{ins.name} must use the exec form (JSON array): {ins.args}"
    return json.loads(ins.args)


def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics, enough for this repository (no ``!`` exceptions)."""
    parts = rel.split("/")
    for pattern in patterns:
        pat = pattern.lstrip("/")
        candidates = [pat]
        if pat.startswith("**/"):
            candidates.append(pat[3:])
        for p in candidates:
            for i in range(1, len(parts) + 1):  # the path or one of its parent directories
                prefix = "/".join(parts[:i])
                if fnmatch.fnmatchcase(prefix, p):
                    return True
                if p.startswith("**/") or pattern.startswith("**/"):
                    if fnmatch.fnmatchcase(parts[i - 1], p.replace("**/", "")):
                        return True
    return False


def copies(instructions: list[Instruction]) -> list[tuple[list[str], str]]:
    out = []
    for ins in instructions:
        if ins.name in ("COPY", "ADD"):
            args = [a for a in ins.args.split() if not a.startswith("--")]
            out.append((args[:-1], args[-1]))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


@pytest.fixture(scope="module")
def instance_yaml() -> dict:
    return yaml.safe_load((ROOT / "dagster.prod.yaml").read_text())  # the image's instance


def _cmd(dockerfile: list[Instruction]) -> list[str]:
    cmd = [i for i in dockerfile if i.name == "CMD"]
    entry = [i for i in dockerfile if i.name == "ENTRYPOINT"]
    argv = (exec_form(entry[-1]) if entry else []) + (exec_form(cmd[-1]) if cmd else [])
    assert argv, "the Dockerfile sets no CMD/ENTRYPOINT"
    return argv


# ---------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------
def test_base_image_matches_the_supported_python(dockerfile) -> None:
    base = next(i for i in dockerfile if i.name == "FROM").args
    m = re.match(r"python:(3\.\d+)", base)
    assert m, f"base image {base} is not an official python image"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    lo, hi = re.search(r">=\s*3\.(\d+)", requires), re.search(r"<\s*3\.(\d+)", requires)
    minor = int(m.group(1).split(".")[1])
    assert int(lo.group(1)) <= minor < int(hi.group(1)), (base, requires)


def test_installs_the_package_from_its_sources(dockerfile) -> None:
    copied = [src for srcs, _ in copies(dockerfile) for src in srcs]
    for needed in ("pyproject.toml", "setup.py", "README.md", "analytics_platform"):
        assert needed in copied, f"the Dockerfile does not COPY {needed}"  # README: pyproject's readme
    installs = [
        (n, i) for n, i in enumerate(dockerfile)
        if i.name == "RUN" and re.search(r"pip install\b.*(\s\.(\s|$)|\s\./?(\s|$))", i.args)
    ]
    assert installs, "no `pip install .` of the package"
    index, install = installs[0]
    last_package_copy = max(
        n for n, i in enumerate(dockerfile)
        if i.name == "COPY" and any(s in i.args.split() for s in ("pyproject.toml", "analytics_platform"))
    )
    assert last_package_copy < index, "the package is installed before its sources are copied"
    assert "-e " not in install.args and "--editable" not in install.args, "an image needs a real install"
    assert "dagster-k8s" in install.args, "run workers of the K8sRunLauncher need dagster-k8s"


def test_every_copied_path_exists_and_is_not_dockerignored(dockerfile) -> None:
    patterns = ignore_patterns()
    for srcs, _ in copies(dockerfile):
        for src in srcs:
            assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
            assert not ignored(src, patterns), f"COPY {src} is excluded by .dockerignore"


def test_dockerignore_keeps_local_state_and_tests_out() -> None:
    patterns = ignore_patterns()
    for rel in (".venv/bin/python", ".analytics_data/warehouse.duckdb", ".git/HEAD", "test-output/a.png",
                "analytics_platform_tests/conftest.py", "analytics_platform/__pycache__/x.pyc", ".env"):
        assert ignored(rel, patterns), f"{rel} would be sent to the docker daemon"
    for rel in ("analytics_platform/definitions.py", "analytics_platform/sql/posthog/sessions_merge.sql",
                "config/events_config.json", "dagster.prod.yaml", "pyproject.toml"):
        assert not ignored(rel, patterns), f"{rel} is excluded but the image needs it"


def test_instance_yaml_in_dagster_home(dockerfile) -> None:
    env = env_of(dockerfile)
    home = env.get("DAGSTER_HOME")
    assert home and home.startswith("/"), "DAGSTER_HOME must be set to an absolute path"
    dests = {expand(dest, env).rstrip("/"): srcs for srcs, dest in copies(dockerfile)}
    assert dests.get(f"{home}/dagster.yaml") == ["dagster.prod.yaml"], f"dagster.prod.yaml is not copied to {home}: {dests}"
    assert env.get("ANALYTICS_ENV") == "prod", "the production image must not fall back to local stand-ins"
    user = [i.args for i in dockerfile if i.name == "USER"]
    assert user and user[-1] not in ("root", "0"), "the image should not run as root"


def test_entry_point_serves_the_code_location(dockerfile, values) -> None:
    argv = _cmd(dockerfile)
    assert argv[0] == "dagster"
    assert argv[1:3] in (["code-server", "start"], ["api", "grpc"]), argv
    assert harness.option(argv, "-m", "--module-name") == MODULE
    assert harness.option(argv, "-h", "--host") == "0.0.0.0", "must listen on all interfaces in a container"
    port = int(harness.option(argv, "-p", "--port"))
    exposed = [int(p.split("/")[0]) for i in dockerfile if i.name == "EXPOSE" for p in i.args.split()]
    assert port in exposed

    # The same module everywhere: workspace.yaml, pyproject's [tool.dagster], the Helm values.
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == MODULE
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dagster"]["module_name"] == MODULE
    deployment = values["dagster-user-deployments"]["deployments"][0]
    args = deployment.get("codeServerArgs") or deployment.get("dagsterApiGrpcArgs")
    assert harness.option(args, "-m", "--module-name") == MODULE
    assert deployment["port"] == port


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory, dockerfile) -> Path:
    """The files the Dockerfile's COPY steps put into WORKDIR, after .dockerignore."""
    env = env_of(dockerfile)
    workdir = next(i.args for i in reversed(dockerfile) if i.name == "WORKDIR")
    image = tmp_path_factory.mktemp("image")
    patterns = ignore_patterns()
    cwd = workdir
    for ins in dockerfile:
        if ins.name == "WORKDIR":
            cwd = ins.args
        if ins.name != "COPY":
            continue
        args = [a for a in ins.args.split() if not a.startswith("--")]
        srcs, dest = args[:-1], expand(args[-1], env)
        target = Path(dest if dest.startswith("/") else f"{cwd}/{dest}")
        for src in srcs:
            path = ROOT / src
            if path.is_dir():
                out = image / target.relative_to("/")
                for f in path.rglob("*"):
                    rel = f.relative_to(ROOT).as_posix()
                    if f.is_file() and not ignored(rel, patterns):
                        (out / f.relative_to(path)).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(f, out / f.relative_to(path))
            else:
                out = image / target.relative_to("/")
                if dest.endswith("/") or dest in (".", "./"):
                    out = out / path.name
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out)
    return image / workdir.lstrip("/")


def test_package_builds_from_the_copied_files_alone(build_context: Path, tmp_path: Path) -> None:
    """setuptools builds the package from the image's files alone (offline: the same
    pyproject metadata and package discovery `pip install .` uses), with every module and
    SQL file of the sources in it."""
    out = tmp_path / "build"
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build", "--build-base", str(out)],
        cwd=build_context, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lib = out / "lib"
    built = {f.relative_to(lib).as_posix() for f in lib.rglob("*") if f.is_file()}
    sources = {
        f.relative_to(build_context).as_posix()
        for f in (build_context / "analytics_platform").rglob("*")
        if f.suffix in (".py", ".sql")
    }
    assert any(n.endswith(".sql") for n in sources), "no SQL file in the build context"
    assert sources - built == set(), f"missing from the installed package: {sorted(sources - built)[:20]}"
    assert "analytics_platform/definitions.py" in built


@pytest.mark.timeout(300)
def test_image_command_starts_a_healthy_code_server(dockerfile, build_context: Path, tmp_path: Path) -> None:
    """The image's CMD, on a free loopback port, from the image's WORKDIR layout."""
    argv = _cmd(dockerfile)
    port = free_port()
    argv = [str(harness.VENV_BIN / "dagster") if a == "dagster" and i == 0 else a for i, a in enumerate(argv)]
    argv = [("127.0.0.1" if a == "0.0.0.0" else a) for a in argv]
    argv[argv.index(harness.option(argv, "-p", "--port"))] = str(port)
    image_env = env_of(dockerfile)
    env = harness.local_env(tmp_path / "home", tmp_path / "data", ANALYTICS_ENV=image_env["ANALYTICS_ENV"])
    proc = start_process_group(argv, tmp_path / "code_server.log", env=env, cwd=build_context)
    try:
        check = [str(harness.VENV_BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)]
        import time

        deadline = time.monotonic() + 180
        while True:
            ok = subprocess.run(check, capture_output=True, text=True, timeout=60, env=env).returncode == 0
            if ok:
                break
            assert proc.poll() is None, (tmp_path / "code_server.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp_path / "code_server.log").read_text()[-4000:]
            time.sleep(1)
    finally:
        kill_process_group(proc, timeout=15)


# ---------------------------------------------------------------------------------------
# Helm values and the ConfigMap
# ---------------------------------------------------------------------------------------
# Top-level keys of the dagster chart's values schema (helm/dagster/schema, 1.x).
CHART_KEYS = {
    "dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
    "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate",
    "telemetry", "serviceAccount", "global", "retention", "additionalInstanceConfig", "concurrency",
}


def test_values_use_known_chart_keys(values) -> None:
    assert set(values) <= CHART_KEYS, sorted(set(values) - CHART_KEYS)


def test_values_launch_runs_as_kubernetes_jobs_with_env_from_secrets(values) -> None:
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    secrets = {s["name"] for s in k8s["envSecrets"]}
    maps = {m["name"] for m in k8s["envConfigMaps"]}
    assert "analytics-platform-secrets" in secrets and "analytics-platform-config" in maps
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert {s["name"] for s in deployment["envSecrets"]} == secrets
    assert {m["name"] for m in deployment["envConfigMaps"]} == maps
    assert {s["name"] for s in values["dagsterDaemon"]["envSecrets"]} == secrets


def test_values_store_everything_in_postgres_without_a_literal_password(values) -> None:
    pg = values["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlHost"]
    assert pg["postgresqlScheme"] == "postgresql+psycopg2"
    assert pg["postgresqlPassword"] == "" and values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]


def test_values_repeat_the_instance_queue_and_retries(values, instance_yaml) -> None:
    """The chart writes the cluster's instance config: it must say what dagster.yaml says."""
    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    expected = instance_yaml["concurrency"]["runs"]
    assert queued["maxConcurrentRuns"] == expected["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == expected["tag_concurrency_limits"]
    assert any(t["key"] == "analytics_platform/mixpanel_export" for t in queued["tagConcurrencyLimits"])
    assert daemon["runRetries"] == {
        "enabled": instance_yaml["run_retries"]["enabled"],
        "maxRetries": instance_yaml["run_retries"]["max_retries"],
    }
    monitoring = instance_yaml["run_monitoring"]
    assert daemon["runMonitoring"]["enabled"] == monitoring["enabled"]
    assert daemon["runMonitoring"]["startTimeoutSeconds"] == monitoring["start_timeout_seconds"]
    assert values["telemetry"]["enabled"] is instance_yaml["telemetry"]["enabled"]


def test_values_limit_every_concurrency_pool_of_the_code(values, instance_yaml) -> None:
    """Ops in a pool (the Mixpanel export) get an instance-wide slot limit in the cluster."""
    import dagster as dg

    from analytics_platform.definitions import defs

    pools = {
        a.node_def.pool
        for a in defs.assets
        if isinstance(a, dg.AssetsDefinition) and a.is_executable and getattr(a.node_def, "pool", None)
    }
    concurrency = values.get("concurrency") or {}
    if pools:
        assert concurrency.get("enabled") is True, f"pools {sorted(pools)} need concurrency.enabled"
        limit = (concurrency.get("pools") or {}).get("defaultLimit")
        assert isinstance(limit, int) and limit >= 1, f"pools {sorted(pools)} have no limit in deploy/values.yaml"
        local = ((instance_yaml.get("concurrency") or {}).get("pools") or {}).get("default_limit")
        assert local == limit, "dagster.yaml and deploy/values.yaml disagree on the pool limit"
    # The chart refuses run limits in both places; ours are in the run coordinator.
    assert not (concurrency.get("runs") or {}).get("tagConcurrencyLimits")


def test_configmap_holds_settings_and_no_secret() -> None:
    from analytics_platform.settings import SECRET_VARIABLES, _ENV_TO_FIELD

    doc = yaml.safe_load(CONFIGMAP.read_text())
    assert doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "analytics-platform-config"
    data = doc["data"]
    assert data["ANALYTICS_ENV"] == "prod"
    unknown = set(data) - set(_ENV_TO_FIELD)
    assert not unknown, f"not in the settings contract: {sorted(unknown)}"
    assert not set(data) & set(SECRET_VARIABLES), "secrets belong in the Secret, not the ConfigMap"
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"


def test_deploy_readme_creates_every_production_secret() -> None:
    from analytics_platform.settings import SECRET_VARIABLES

    text = (ROOT / "deploy" / "README.md").read_text()
    for name in SECRET_VARIABLES:
        assert name in text, f"deploy/README.md does not say where {name} comes from"


def test_values_send_compute_logs_to_the_same_gcs_bucket(values, instance_yaml) -> None:
    """Production compute logs go to GCS, in the chart's instance as in the image's."""
    logs = instance_yaml["compute_logs"]
    assert (logs["module"], logs["class"]) == ("dagster_gcp.gcs.compute_log_manager", "GCSComputeLogManager")
    chart = values["computeLogManager"]
    assert chart["type"] == "GCSComputeLogManager"
    gcs = chart["config"]["gcsComputeLogManager"]
    assert gcs["bucket"] == logs["config"]["bucket"] == {"env": "DAGSTER_COMPUTE_LOGS_BUCKET"}
    assert gcs["prefix"] == logs["config"]["prefix"]
    configmap = yaml.safe_load(CONFIGMAP.read_text())["data"]
    assert configmap.get("DAGSTER_COMPUTE_LOGS_BUCKET"), "the bucket variable is not in the ConfigMap"
