"""A local PostgreSQL cluster from the machine's server binaries, under `.local/<environment>`
(or /var/tmp when the postgres user cannot enter the checkout), run as the `postgres` user
when we are root: initdb and pg_ctl refuse to run as root.

Every connection proves a password (scram-sha-256), on the unix socket and on TCP alike: the
superuser's comes from the credentials file (connectors/credentials.py) from initdb on. A
cluster an older checkout made with `trust` is converted on its next start."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

from connectors.config import LOCAL, Config, state_dir
from connectors.credentials import PG_SUPERUSER, ensure_credentials, postgres_login
from connectors.pg_roles import literal, scram_verifier
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
    ensure_credentials(config)
    if not (data / "PG_VERSION").exists():
        _initdb(config, base, data)
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
    if _trusts(data):
        _require_passwords(config, base, data)
    _ensure_database(config, base)
    say(f"postgres ready on {config.postgres.host}:{config.postgres.port}, database {config.postgres.database}")


def _initdb(config: Config, base: Path, data: Path) -> None:
    say("initialising a PostgreSQL cluster (scram-sha-256 passwords)...")
    password_file = remember_superuser_password(config, base)
    result = subprocess.run(
        as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "-U",
                PG_SUPERUSER,
                "-E",
                "UTF8",
            ]
        ),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise InfraError(f"initdb failed in {data}: {result.stderr.strip()[-1500:]}")
    _write_hba(data)


# Written over initdb's: the same rule for the socket and for TCP, and nothing else.
HBA = """# Written by devtools/local_postgres.py: every connection proves a password.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
"""


def _write_hba(data: Path) -> None:
    _write_as_postgres(data / "pg_hba.conf", HBA)


def _write_as_postgres(path: Path, text: str) -> None:
    """Owner-only, and owned by the postgres user when we are root, so the server reads it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _trusts(data: Path) -> bool:
    """Does pg_hba.conf let any connection in without a password (an older checkout's cluster)?"""
    for line in (data / "pg_hba.conf").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and fields[-1] == "trust":
            return True
    return False


def superuser_password_file(base: Path) -> Path:
    """The superuser password this cluster was last given. The credentials file may hold a newer
    one (rotated): setup logs in with this one to set that one (devtools.pg_setup)."""
    return base / "superuser.password"


def remember_superuser_password(config: Config, base: Path) -> Path:
    path = superuser_password_file(base)
    _write_as_postgres(path, postgres_login(config, PG_SUPERUSER).password)
    return path


def _psql(config: Config, socket_dir: Path, sql: str, password: str) -> str:
    """SQL through the unix socket as the superuser; the statement goes on stdin, never in argv."""
    command = [str(PG_BIN / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-qtA", "-h", str(socket_dir)]
    command += ["-p", str(config.postgres.port), "-U", PG_SUPERUSER, "-d", "postgres", "-f", "-"]
    result = subprocess.run(
        command, input=sql, capture_output=True, text=True, env={**os.environ, "PGPASSWORD": password}
    )
    if result.returncode != 0:
        raise InfraError(f"psql as {PG_SUPERUSER} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _require_passwords(config: Config, base: Path, data: Path) -> None:
    """Converts a cluster made with `trust`: the superuser gets its password, then pg_hba.conf
    asks everyone for one. Setup gives the other roles theirs."""
    say("this cluster lets anyone in without a password (made with --auth=trust): converting it")
    password = postgres_login(config, PG_SUPERUSER).password
    _psql(config, base, f"ALTER ROLE {PG_SUPERUSER} PASSWORD {literal(scram_verifier(password))};", password)
    remember_superuser_password(config, base)
    _write_hba(data)
    reload = subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "reload"]), capture_output=True)
    if reload.returncode != 0 or _trusts(data):
        raise InfraError(f"could not reload {data / 'pg_hba.conf'}; `make reset` starts a new cluster")


def _ensure_database(config: Config, socket_dir: Path) -> None:
    password = superuser_password_file(socket_dir).read_text()
    name = config.postgres.database
    if _psql(config, socket_dir, f"SELECT 1 FROM pg_database WHERE datname = {literal(name)};", password) != "1":
        _psql(config, socket_dir, f'CREATE DATABASE "{name}";', password)


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
