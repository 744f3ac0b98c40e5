"""Fault injection for the platform's services: a service process, private dependencies to break, and counting.

A service joins the suite with a ``Flow`` (how to send it N inputs and count what it made of them) and the
fixtures of ``tests/chaos/conftest.py``; the faults are the same for every service:

- ``ServiceProcess``: ``python -m services.<name>`` as a child process with its own environment (topics, group,
  database), ``kill9()`` and ``start()`` again, ``stop()`` with SIGTERM;
- ``PrivatePostgres`` / ``PrivateKafka`` / ``PrivateMinio`` / ``PrivateTriton``: a PostgreSQL + PostGIS cluster, a
  single-node KRaft broker, a MinIO server or a tritonserver of the test's own, started from the binaries the
  local stack installed, on free loopback ports and in temporary folders, so that stopping or restarting them
  disturbs nobody else on the host (each has ``start()`` and ``stop()``);
- ``outage``: stop a dependency for a while with inputs flowing, checking that the service stays up and
  dead-letters nothing, start it again and measure the recovery;
- ``recovery_s``: seconds from a dependency being back to the next unit of progress.

A new service joins with a Flow class and a few lines per fault, e.g. (``tests/chaos/test_promptgen_chaos.py``)::

    service = ServiceProcess("promptgen", flow.service_env(), tmp_path / "promptgen.log").start()
    recovered = outage(private_minio, 20, service, flow, bound_s=30)
    assert_all_done(flow, service, expected)

Nothing here is a fake: the faults hit the real server processes the services talk to.
"""

from __future__ import annotations

import base64
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EGX_CACHE", Path.home() / ".cache" / "earthgptx"))
PG_BIN = Path(os.environ.get("EGX_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.1) -> float:
    """Poll ``predicate`` until true; returns the seconds it took. Fails naming ``what`` after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)
    return time.monotonic() - started


def recovery_s(progress: Callable[[], int], timeout_s: float, what: str) -> float:
    """Seconds until ``progress()`` grows past its value now (call it the moment a dependency is back)."""
    start = progress()
    return wait_for(lambda: progress() > start, timeout_s, what, every_s=0.05)


class Flow(Protocol):
    """What a service under chaos does, seen from outside: inputs in, durable effects and dead letters out."""

    def send(self, count: int, start: int = 0) -> None:
        """Publish inputs number ``start`` .. ``start + count - 1`` (deterministic, so they can be counted)."""

    def done(self) -> int:
        """How many distinct inputs have their durable effect (rows committed, event acknowledged)."""

    def duplicates(self) -> int:
        """Durable effects present more than once (must stay 0: effects are idempotent)."""

    def dead_letters(self) -> int:
        """Records of valid inputs in the service's dead-letter topic (must stay 0 under outages)."""


@dataclass
class ServiceProcess:
    """``python -m services.<module>`` in a child process; logs go to ``log_path``."""

    module: str
    env: Mapping[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    log_offset: int = field(default=0, init=False)  # where the current process's log begins

    def start(self) -> ServiceProcess:
        # A metrics port inherited from the shell (the stack's own worker of the same service holds it) would make
        # the child fail to bind; the test's service opens one only where its own env asks for it.
        inherited = {k: v for k, v in os.environ.items() if not k.endswith("_METRICS_PORT")}
        environment = {**inherited, **self.env, "PYTHONUNBUFFERED": "1"}
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.module}"], cwd=REPO_ROOT, env=environment,
                stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (kills and fails if it does not stop in time)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process is not None else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"services.{self.module} did not stop on SIGTERM; log:\n{self.tail()}") from None

    def wait_for_log(self, text: str, timeout_s: float = 90.0) -> None:
        """Wait until the current process's log says ``text`` (e.g. that its consumer has joined its group)."""
        wait_for(lambda: text in self.log_path.read_bytes()[self.log_offset:].decode(errors="replace")
                 or not self.alive, timeout_s,
                 f"{text!r} in the log of services.{self.module}")
        assert self.alive, f"services.{self.module} exited:\n{self.tail()}"

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


class Dependency(Protocol):
    """A server of the test's own that a fault stops and starts again."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def outage(dependency: Dependency, seconds: float, service: ServiceProcess, flow: Flow, *, bound_s: float,
           what: str = "the first unit of progress after the outage", during: Callable[[], None] | None = None,
           ) -> float:
    """Stop ``dependency`` for ``seconds`` while the service runs; meanwhile the service must stay alive and
    dead-letter nothing. Start it again; returns the seconds until ``flow.done()`` grows (failing after
    ``bound_s``). Call it while inputs are still waiting, or send them in ``during`` (called once the dependency
    is down), so that there is progress to measure."""
    dependency.stop()
    if during is not None:
        during()
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            assert service.alive, f"services.{service.module} exited during the outage:\n{service.tail()}"
            assert flow.dead_letters() == 0, "a valid input was dead-lettered during the outage"
            time.sleep(1.0)
    finally:
        dependency.start()
    return recovery_s(flow.done, bound_s, what)


def _as_postgres(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; the stack's scripts use the postgres system user the same way.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PrivatePostgres:
    """A PostgreSQL + PostGIS cluster of the test's own (initdb into a temporary folder, trust auth on loopback)."""

    def __init__(self, database: str = "chaos") -> None:
        self.port = free_port()
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="egx-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                                     "-o", options, "-w", "-t", "60", "start"]), check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                       check=True, capture_output=True)

    def create_database(self) -> None:
        psql = [str(PG_BIN / "psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                "-v", "ON_ERROR_STOP=1"]
        subprocess.run([*psql, "-d", "postgres", "-c", f'CREATE DATABASE "{self.database}"'], check=True,
                       capture_output=True)
        subprocess.run([*psql, "-d", self.database, "-c", "CREATE EXTENSION IF NOT EXISTS postgis"], check=True,
                       capture_output=True)

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateKafka:
    """A single-node KRaft broker of the test's own, from the jars the local stack resolved into the cache."""

    def __init__(self, heap: str = "256m") -> None:
        libs = sorted(glob.glob(str(CACHE / "kafka-*" / "libs")))
        if not libs:
            raise RuntimeError(f"no Kafka jars under {CACHE}; run `make up` first")
        self.classpath = f"{libs[-1]}/*"
        self.heap = heap
        self.port, self.controller_port = free_port(), free_port()
        self.root = Path(tempfile.mkdtemp(prefix="egx-chaos-kafka-"))
        self.log = self.root / "kafka.out"
        self.process: subprocess.Popen[bytes] | None = None
        properties = self.root / "server.properties"
        properties.write_text(
            "\n".join([
                "process.roles=broker,controller", "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.root / 'data'}", "num.partitions=3", "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=3", "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1", "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
            ]) + "\n"
        )
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        subprocess.run([*self._java(), "kafka.tools.StorageTool", "format", "--ignore-formatted",
                        f"--cluster-id={cluster_id}", "-c", str(properties)], check=True, capture_output=True)
        self.properties = properties

    def _java(self) -> list[str]:
        return ["java", "-Xms64m", f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true", f"-Dkafka.logs.dir={self.root / 'logs'}", "-cp", self.classpath]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([*self._java(), "kafka.Kafka", str(self.properties)],
                                            stdout=out, stderr=subprocess.STDOUT)
        wait_for(self.ready, timeout_s, "the private Kafka broker", every_s=0.5)

    def ready(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the private Kafka broker exited; see {self.log}")
        try:
            admin = KafkaAdminClient(bootstrap_servers=[self.bootstrap], request_timeout_ms=2000)
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateMinio:
    """A MinIO server of the test's own (the binary the local stack built), with its own credentials and data.

    ``notify_kafka``: bootstrap and topic of MinIO's Kafka notification target (``arn:minio:sqs::PRIMARY:kafka``,
    as the stack configures it), for the ingest service's drop bucket.
    """

    def __init__(self, notify_kafka: tuple[str, str] | None = None) -> None:
        self.binary = CACHE / "bin" / "minio"
        if not self.binary.exists():
            raise RuntimeError(f"no MinIO server at {self.binary}; run `make up` first")
        self.port, self.console_port = free_port(), free_port()
        self.root = Path(tempfile.mkdtemp(prefix="egx-chaos-minio-"))
        self.access_key = f"chaos{uuid.uuid4().hex[:10]}"
        self.secret_key = uuid.uuid4().hex
        self.notify_kafka = notify_kafka
        self.log = self.root / "minio.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The ``EGX_S3_*`` of a service that uses this server."""
        return {"EGX_S3_ENDPOINT": self.endpoint, "EGX_S3_ACCESS_KEY": self.access_key,
                "EGX_S3_SECRET_KEY": self.secret_key}

    def start(self, timeout_s: float = 60.0) -> None:
        environment = {**os.environ, "MINIO_ROOT_USER": self.access_key, "MINIO_ROOT_PASSWORD": self.secret_key,
                       "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"}
        if self.notify_kafka is not None:
            bootstrap, topic = self.notify_kafka
            (self.root / "notify-queue").mkdir(exist_ok=True)
            environment.update({
                "MINIO_NOTIFY_KAFKA_ENABLE_PRIMARY": "on", "MINIO_NOTIFY_KAFKA_BROKERS_PRIMARY": bootstrap,
                "MINIO_NOTIFY_KAFKA_TOPIC_PRIMARY": topic,
                "MINIO_NOTIFY_KAFKA_QUEUE_DIR_PRIMARY": str(self.root / "notify-queue"),
            })
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [str(self.binary), "server", "--quiet", "--address", self.endpoint,
                 "--console-address", f"127.0.0.1:{self.console_port}", str(self.root / "data")],
                env=environment, stdout=out, stderr=subprocess.STDOUT,
            )
        wait_for(self.ready, timeout_s, "the private MinIO server", every_s=0.2)

    def ready(self) -> bool:
        import urllib.error
        import urllib.request

        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the private MinIO server exited; see {self.log}")
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/minio/health/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateTriton:
    """A tritonserver of the test's own, through the stack's own script (``deploy/local/triton.sh``) with its own
    state folder and ports and the stack's model repository. Starting it loads the models: minutes on a busy
    2-core host."""

    def __init__(self, start_timeout_s: int = 600) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="egx-chaos-triton-"))
        self.ports = {name: free_port() for name in ("HTTP", "GRPC", "METRICS")}
        self.start_timeout_s = start_timeout_s
        self.script = REPO_ROOT / "deploy" / "local" / "triton.sh"

    def env(self) -> dict[str, str]:
        """The ``EGX_TRITON_*`` of a service that uses this server."""
        return {"EGX_TRITON_HTTP_URL": f"127.0.0.1:{self.ports['HTTP']}",
                "EGX_TRITON_GRPC_URL": f"127.0.0.1:{self.ports['GRPC']}"}

    def _control(self, action: str) -> None:
        environment = {
            **os.environ, "EGX_STATE_DIR": str(self.root), "EGX_TRITON_START_TIMEOUT": str(self.start_timeout_s),
            **{f"EGX_TRITON_{name}_PORT": str(port) for name, port in self.ports.items()},
        }
        done = subprocess.run([str(self.script), action], env=environment, timeout=self.start_timeout_s + 60,
                              capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"triton.sh {action} failed: {done.stdout[-2000:]!r} {done.stderr[-2000:]!r}")

    def start(self) -> None:
        self._control("start")

    def stop(self) -> None:
        self._control("stop")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
