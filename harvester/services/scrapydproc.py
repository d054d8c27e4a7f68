"""Run a local Scrapyd for this project (``harvest scrapyd start|stop|status|deploy``).

Scrapyd runs from ``$HARVEST_HOME/scrapyd`` with ``deploy/scrapyd.conf`` copied there, so
its eggs, logs, job database and job dirs live under ``$HARVEST_HOME``. Jobs inherit its
environment: we hand it absolute ``HARVEST_HOME``/``HARVEST_SOURCES`` and the database URL
(the embedded server's, started here when needed), and migrate the database first, so a job
finds everything without any manual step.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harvester.config import HarvestConfig, get_scrapyd_env
from harvester.services import database
from harvester.services.scrapyd import Node, ScrapydError, local_url

START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Paths:
    root: Path

    @classmethod
    def of(cls, config: HarvestConfig) -> Paths:
        return cls(config.home.absolute() / "scrapyd")

    @property
    def pid(self) -> Path:
        return self.root / "scrapyd.pid"

    @property
    def log(self) -> Path:
        return self.root / "scrapyd.log"

    @property
    def url(self) -> Path:
        """Where the running Scrapyd listens (its port may differ from the environment's)."""
        return self.root / "scrapyd.url"

    @property
    def sources(self) -> Path:
        """The sources file the running Scrapyd hands its jobs."""
        return self.root / "scrapyd.sources"


def project_dir() -> Path:
    """The project checkout (where scrapy.cfg is): deploy/ and setup.py live there."""
    from scrapy.utils.conf import closest_scrapy_cfg  # Scrapy only where it is needed

    cfg = closest_scrapy_cfg()
    if not cfg:
        raise ScrapydError("no scrapy.cfg here or above; run this from the harvester "
                           "project directory")
    return Path(cfg).parent


def local_node() -> Node:
    return Node.parse(local_url())


def running_pid(paths: Paths) -> int | None:
    try:
        pid = int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _ours(pid, paths) and not _zombie(pid) else None


def _ours(pid: int, paths: Paths) -> bool:
    """Whether ``pid`` is a process of this Scrapyd: it, or a job it started, runs in its
    directory. A pid file outlives the process it named (a reboot, kill -9), and its number
    comes back as any other process: "Scrapyd running" was said of that one, and `harvest
    scrapyd stop` killed its process group."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == paths.root.resolve()
    except OSError:  # gone, or another user's
        return False


def _our_group(group: int, paths: Paths) -> bool:
    """Whether a live process of process group ``group`` is this Scrapyd's (its jobs
    outlive a Scrapyd that was killed)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if int(fields[2]) == group and fields[0] != "Z" and _ours(int(entry.name),
                                                                          paths):
                    return True
    return False


def _zombie(pid: int) -> bool:
    """A process that exited and is not reaped yet (kill -9 a moment ago, or a parent that
    never reaps): signal 0 still reaches it, and "Scrapyd running" was said of it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def stop_left_jobs(config: HarvestConfig) -> bool:
    """Stop the jobs a killed Scrapyd left running (its process group outlives it): a new
    Scrapyd does not list them, so the scheduler marked them lost and crawled their sources
    a second time alongside them, and `harvest scrapyd stop` no longer reached them.
    True when there were some (they get SIGTERM: each ends its crawl and records its run)."""
    paths = Paths.of(config)
    if not paths.pid.exists() or running_pid(paths) is not None:
        return False
    return stop(config)


def start(config: HarvestConfig) -> tuple[int, Node]:
    """Start Scrapyd in the background; return its pid and node once it answers."""
    env_cfg = get_scrapyd_env()
    if (not env_cfg.username or env_cfg.password is None
            or not env_cfg.password.get_secret_value()):
        # Scrapyd turns authentication off when either is empty: SCRAPYD_PASSWORD="" left
        # it open to anyone on the machine.
        raise ScrapydError("set SCRAPYD_USERNAME and a non-empty SCRAPYD_PASSWORD: this "
                           "project never runs Scrapyd without authentication")
    paths = Paths.of(config)
    node = local_node()
    if (pid := running_pid(paths)) is not None:
        running = paths.url.read_text().strip() if paths.url.exists() else node.url
        if running != node.url:
            # "running at <the port asked for>" was said of one listening elsewhere.
            raise ScrapydError(f"Scrapyd is already running at {running} (pid {pid}); stop it "
                               f"with `harvest scrapyd stop` to start it at {node.url}")
        given = paths.sources.read_text().strip() if paths.sources.exists() else None
        wanted = str(config.sources.absolute())
        if given is not None and given != wanted:
            # "running" was said, and its jobs went on reading the other file: sources only
            # in this one ended in config_error ("unknown source").
            raise ScrapydError(f"Scrapyd is already running (pid {pid}) with the sources file "
                               f"{given}; stop it with `harvest scrapyd stop` to start it "
                               f"with {wanted}")
        return pid, node
    if problem := _port_taken(get_scrapyd_env().bind_address, get_scrapyd_env().http_port):
        # Scrapyd exited at once, and the other server's answer passed for it: "running".
        raise ScrapydError(f"cannot start Scrapyd at {node.url}: {problem}; stop what "
                           "listens there or set SCRAPYD_HTTP_PORT to a free port")
    paths.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(project_dir() / "deploy" / "scrapyd.conf", paths.root / "scrapyd.conf")
    url = database.resolve_url(config)
    database.ensure_schema(url)
    env = {
        **os.environ,
        "HARVEST_HOME": str(config.home.absolute()),
        "HARVEST_SOURCES": str(config.sources.absolute()),
        "HARVEST_DATABASE_URL": url,
    }
    scrapyd = Path(sys.executable).with_name("scrapyd")
    with paths.log.open("ab") as log:
        process = subprocess.Popen(
            [str(scrapyd)], cwd=paths.root, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    paths.pid.write_text(str(process.pid))
    paths.url.write_text(node.url)
    paths.sources.write_text(env["HARVEST_SOURCES"])
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            paths.pid.unlink(missing_ok=True)
            raise ScrapydError(f"Scrapyd exited at start (status {process.returncode}); "
                               f"see {paths.log}")
        try:
            node.status()
        except ScrapydError:
            time.sleep(0.3)
            continue
        return process.pid, node
    stop(config)
    raise ScrapydError(f"Scrapyd did not answer on {node.url} within {START_TIMEOUT_S:.0f} s; "
                       f"see {paths.log}")


def _port_taken(host: str, port: int) -> str | None:
    """Why Scrapyd could not listen on ``host:port`` (another server has it), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted listens
        try:
            probe.bind((host, port))
        except OSError as exc:
            return f"port {port} is in use ({exc.strerror or exc})"
    return None


def stop(config: HarvestConfig, timeout: float = 60.0) -> bool:
    """Stop the Scrapyd started by :func:`start` and its jobs (its process group: the jobs
    outlive a Scrapyd that was killed), waiting for the jobs to finish their shutdown
    (their last batch, their run record) up to ``timeout``; False when none was running."""
    paths = Paths.of(config)
    try:
        group = int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        group = None
    if group is None or not _group_alive(group) or not _our_group(group, paths):
        paths.pid.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(group):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(group, os.WNOHANG)  # reap it when it is our child (tests)
        time.sleep(0.2)
    if _group_alive(group):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    paths.pid.unlink(missing_ok=True)
    return True


def _group_alive(group: int) -> bool:
    """Whether any process of Scrapyd's group (it, or a job it started) is running."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    with contextlib.suppress(ChildProcessError):
        os.waitpid(group, os.WNOHANG)  # a leader that is our zombie child is gone
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def _building(root: Path) -> Iterator[None]:
    """Hold the project's egg-building lock: setuptools builds in ``root/build`` and its
    ``clean -a`` empties that directory, so two deploys at once (two operators, or two
    test workers) broke each other's egg with "No such file or directory"."""
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"harvest-egg-{digest}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def build_egg() -> bytes:
    """The project egg, built by ``scrapyd-deploy --build-egg`` in the project directory."""
    root = project_dir()
    deploy = Path(sys.executable).with_name("scrapyd-deploy")
    with _building(root), tempfile.TemporaryDirectory(prefix="harvest-egg-") as tmp:
        egg = Path(tmp) / "harvester.egg"
        result = subprocess.run(
            [str(deploy), f"--build-egg={egg}"], cwd=root, capture_output=True, text=True,
            timeout=300, check=False,
        )
        if result.returncode != 0 or not egg.exists():
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ScrapydError(f"building the project egg failed: {tail[0]}")
        return egg.read_bytes()


def deploy(nodes: list[Node], version: str | None = None) -> dict[str, int | str]:
    """Upload one freshly built egg to every node; node URL → spider count or the error."""
    egg = build_egg()
    version = version or str(int(time.time()))
    outcome: dict[str, int | str] = {}
    for node in nodes:
        try:
            outcome[node.url] = node.add_version(version, egg)
        except ScrapydError as exc:
            outcome[node.url] = str(exc)
    return outcome
