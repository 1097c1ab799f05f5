"""A local PostgreSQL cluster from the machine's server binaries, under `.local/<environment>`
(or /var/tmp when the postgres user cannot enter the checkout), run as the `postgres` user
when we are root: initdb and pg_ctl refuse to run as root."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

from connectors.config import LOCAL, Config, state_dir
from devtools.infra_base import InfraError, say

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def pg_data_dir(config: Config) -> Path:
    """The cluster lives in .local/postgres unless the postgres user cannot reach it
    (a checkout under /root); then it lives in /var/tmp and .local/postgres links to it."""
    link = state_dir(config) / "postgres"
    if link.is_symlink() or link.exists():
        return link.resolve()
    if os.geteuid() == 0 and not _traversable_by_postgres(LOCAL):
        tag = uuid.uuid5(uuid.NAMESPACE_URL, str(link)).hex[:8]
        target = Path("/var/tmp") / f"payments-postgres-{config.environment}-{tag}"
        target.mkdir(parents=True, exist_ok=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        return target
    link.mkdir(parents=True, exist_ok=True)
    return link


def _traversable_by_postgres(path: Path) -> bool:
    for parent in [path, *path.parents]:
        if parent.exists() and not (parent.stat().st_mode & 0o001):
            return False
    return True


def as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _ensure_postgres_user() -> None:
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        say("creating system user postgres (initdb refuses to run as root)")
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)


def start_postgres(config: Config) -> None:
    if not (PG_BIN / "pg_ctl").exists():
        raise InfraError(
            f"PostgreSQL server binaries not found in {PG_BIN} (apt-get install postgresql-15, or set PG_BIN)"
        )
    _ensure_postgres_user()
    base = pg_data_dir(config)
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        say("initialising a PostgreSQL cluster...")
        subprocess.run(
            as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(data), "--auth=trust", "-U", config.postgres.user, "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )
    status = subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "status"]), capture_output=True)
    if status.returncode != 0:
        say(f"starting postgres on {config.postgres.host}:{config.postgres.port}...")
        options = (
            f"-p {config.postgres.port} -k {base} -c listen_addresses={config.postgres.host} "
            "-c fsync=on -c max_connections=200"
        )
        result = subprocess.run(
            as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(base / "postgres.log"),
                    "-o",
                    options,
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise InfraError(
                f"postgres did not start ({result.stdout.strip()} {result.stderr.strip()}); "
                f"see {base / 'postgres.log'} (is port {config.postgres.port} taken? set POSTGRES_PORT)"
            )
    _ensure_database(config, base)
    say(f"postgres ready on {config.postgres.host}:{config.postgres.port}, database {config.postgres.database}")


def _ensure_database(config: Config, socket_dir: Path) -> None:
    psql = [
        str(PG_BIN / "psql"),
        "-h",
        str(socket_dir),
        "-p",
        str(config.postgres.port),
        "-U",
        config.postgres.user,
        "-d",
        "postgres",
        "-tAc",
    ]
    exists = subprocess.run(
        as_postgres([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{config.postgres.database}'"]),
        capture_output=True,
        text=True,
        check=True,
    )
    if exists.stdout.strip() != "1":
        subprocess.run(
            as_postgres([*psql, f'CREATE DATABASE "{config.postgres.database}"']), check=True, capture_output=True
        )


def stop_postgres(config: Config) -> None:
    data = pg_data_dir(config) / "data"
    if (data / "postmaster.pid").exists():
        say("stopping postgres...")
        subprocess.run(
            as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True
        )


def postgres_ready(config: Config) -> bool:
    ready = [str(PG_BIN / "pg_isready"), "-h", config.postgres.host, "-p", str(config.postgres.port)]
    return subprocess.run(as_postgres(ready), capture_output=True).returncode == 0
