"""The grants table: who may touch what, in one place, shown as it is in docs/security.md."""

from __future__ import annotations

import re
from pathlib import Path

from connectors.credentials import PG_OWNER, PG_ROLES, PG_SUPERUSER
from connectors.pg_roles import GRANTS, SERVICE_ROLES, USED_BY, grants_markdown
from devtools.local_postgres import HBA, _trusts

ROOT = Path(__file__).resolve().parents[2]


def test_docs_show_the_grants_table_as_it_is() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    shown = re.search(r"<!-- pg-grants:[^\n]*-->\n(.*?)\n<!-- /pg-grants -->", doc, re.S)
    assert shown is not None, "docs/security.md lost its generated grants table"
    assert shown.group(1) == grants_markdown(), "regenerate it: python -m connectors.pg_roles"


def test_every_role_is_the_superuser_the_owner_or_a_service_with_its_grants() -> None:
    assert {PG_SUPERUSER, PG_OWNER, *SERVICE_ROLES} == set(PG_ROLES) == set(USED_BY)
    assert set(GRANTS) == set(SERVICE_ROLES)


def test_no_service_may_delete_or_alter_a_table() -> None:
    for role, grants in GRANTS.items():
        for table, privileges in grants.items():
            assert set(privileges) <= {"SELECT", "INSERT", "UPDATE"}, (role, table)


def test_the_written_pg_hba_trusts_nobody_and_a_trust_line_is_found(tmp_path: Path) -> None:
    (tmp_path / "pg_hba.conf").write_text(HBA + "# local all all trust (a comment)\n")
    assert not _trusts(tmp_path)
    (tmp_path / "pg_hba.conf").write_text(HBA + "host all all 127.0.0.1/32 trust\n")
    assert _trusts(tmp_path)
