"""The ACL table against the code it must let run (and no further), the broker's security
settings, and the client settings each library gets. tests/integration/test_kafka_acl.py shows
the broker enforcing it."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from connectors import topics as t
from connectors.config import load_config
from connectors.credentials import (
    ADMIN,
    AUDITOR,
    CONSOLE,
    OPERATOR,
    PAYMENT_API,
    PAYMENT_WORKER,
    PRINCIPALS,
    PROJECTOR,
    WALLET_API,
    WALLET_WORKER,
    Login,
)
from connectors.kafka_acl import GRANT_OF, GRANTS, PROJECTOR_GROUP_PREFIX, markdown_table
from connectors.kafka_admin import bindings
from connectors.kafka_security import KafkaAccess
from devtools.localinfra import _kafka_properties, _kafka_secrets

ROOT = Path(__file__).resolve().parents[2]
DECLARED = {spec.name for spec in t.DECLARED_TOPICS}


def test_every_principal_but_admin_has_one_grant_on_declared_topics_only() -> None:
    assert [g.principal for g in GRANTS] == [p for p in PRINCIPALS if p != ADMIN]
    for grant in GRANTS:
        for topic in grant.reads + grant.writes + grant.sees + grant.configs:
            assert topic in DECLARED, (grant.principal, topic)


def test_the_wallet_worker_reads_its_commands_and_writes_only_its_outcomes() -> None:
    from streams.wallet_steps import OUTPUT_TOPIC

    grant = GRANT_OF[WALLET_WORKER]
    tables = {t.WALLETS_CHANGELOG.name, t.MOVEMENTS_CHANGELOG.name}
    assert set(grant.reads) == {t.WALLET_MOVEMENT_REQUIRED.name} | tables
    assert set(grant.writes) == set(OUTPUT_TOPIC.values()) | {t.PAYMENT_DLQ.name} | tables
    assert grant.groups == (t.WALLET_WORKER,)


def test_the_payment_worker_reads_its_sources_and_writes_what_its_steps_send() -> None:
    from streams.payment_steps import OUTPUT_TOPIC
    from streams.payment_worker import OUTPUTS, SOURCES

    grant = GRANT_OF[PAYMENT_WORKER]
    tables = {t.PAYMENTS_CHANGELOG.name, t.OPEN_PAYMENTS_CHANGELOG.name}
    assert set(grant.reads) == {s.name for s in SOURCES} | tables
    assert set(grant.writes) == {s.name for s in OUTPUTS} | set(OUTPUT_TOPIC.values()) | tables
    assert grant.groups == (t.PAYMENT_WORKER,)


def test_the_projector_reads_exactly_its_projections_topics_in_its_own_groups() -> None:
    from services.projector import PROJECTIONS

    grant = GRANT_OF[PROJECTOR]
    assert set(grant.reads) == {topic for p in PROJECTIONS for topic in p.topics}
    assert grant.writes == (t.PAYMENT_DLQ.name,)
    assert grant.group_prefixes == (PROJECTOR_GROUP_PREFIX,) and not grant.groups


def test_the_auditor_reads_what_it_audits_and_writes_nothing() -> None:
    from services.auditor import AUDITED

    grant = GRANT_OF[AUDITOR]
    assert set(grant.reads) == set(AUDITED) and not grant.writes and not grant.groups


def test_the_apis_write_their_commands_and_read_only_their_outcomes() -> None:
    assert GRANT_OF[WALLET_API].writes == (t.WALLET_MOVEMENT_REQUIRED.name,)
    assert GRANT_OF[WALLET_API].reads == (t.WALLET_MOVEMENT_UPDATES.name,)
    assert set(GRANT_OF[PAYMENT_API].writes) == {
        t.PAYMENT_CREATED.name,
        t.PAYMENT_REFUND_REQUESTED.name,
        t.EXTERNAL_PROVIDER_EVENTS.name,
    }
    assert set(GRANT_OF[PAYMENT_API].reads) == {t.PAYMENT_SUCCEEDED.name, t.PAYMENT_FAILED.name}


def test_nobody_but_the_workers_reads_a_table_and_the_console_writes_nothing() -> None:
    tables = {spec.name for spec in t.CHANGELOG_TOPICS}
    for grant in GRANTS:
        if grant.principal not in (WALLET_WORKER, PAYMENT_WORKER):
            assert not tables & set(grant.reads + grant.writes), grant.principal
    assert GRANT_OF[CONSOLE].writes == ()
    assert set(GRANT_OF[CONSOLE].reads) == {spec.name for spec in t.ALL_TOPICS}


def test_the_operator_writes_only_where_a_worker_letter_came_from() -> None:
    from streams.payment_worker import SOURCES

    sources = {s.name for s in SOURCES} | {t.WALLET_MOVEMENT_REQUIRED.name}
    assert set(GRANT_OF[OPERATOR].writes) == sources and not GRANT_OF[OPERATOR].reads


def test_bindings_allow_exactly_the_grant() -> None:
    made = bindings(GRANT_OF[PROJECTOR])
    assert all(b.principal == "User:projector" and b.host == "*" for b in made)
    kinds = {(b.restype, b.name, b.resource_pattern_type, b.operation) for b in made}
    assert (ResourceType.TOPIC, t.PAYMENT_DLQ.name, ResourcePatternType.LITERAL, AclOperation.WRITE) in kinds
    assert (ResourceType.GROUP, "projector-", ResourcePatternType.PREFIXED, AclOperation.READ) in kinds
    grant = GRANT_OF[PROJECTOR]
    assert len(made) == len(grant.reads) + len(grant.writes) + len(grant.group_prefixes)


def test_security_md_shows_the_table() -> None:
    assert markdown_table() in (ROOT / "docs" / "security.md").read_text(), (
        "run: python -m connectors.kafka_acl and paste it into docs/security.md"
    )


def test_the_broker_authenticates_and_authorises_everyone() -> None:
    settings = dict(line.split("=", 1) for line in _kafka_properties(load_config("test", env={})).splitlines() if line)
    assert settings["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert settings["allow.everyone.if.no.acl.found"] == "false"
    assert settings["super.users"] == "User:admin"
    assert settings["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    protocols = dict(item.split(":") for item in settings["listener.security.protocol.map"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, "no listener without a login"
    assert "password" not in _kafka_properties(load_config("test", env={}))


def test_the_broker_secrets_log_it_in_as_admin() -> None:
    secrets = _kafka_secrets(Login("admin", "s3cret"))
    assert 'ScramLoginModule required username="admin" password="s3cret";' in secrets
    assert 'user_admin="s3cret"' in secrets


@pytest.fixture
def access() -> KafkaAccess:
    return KafkaAccess("127.0.0.1:1", Login("console", "pw-not-shown"))


def test_each_library_gets_the_same_login(access: KafkaAccess) -> None:
    assert access.aiokafka() == {
        "bootstrap_servers": "127.0.0.1:1",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "console",
        "sasl_plain_password": "pw-not-shown",
    }
    confluent = access.confluent()
    assert (confluent["sasl.mechanisms"], confluent["sasl.username"]) == ("SCRAM-SHA-512", "console")
    assert "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required" in access.properties()
    credentials = access.faust_credentials()
    assert (credentials.username, credentials.mechanism.value) == ("console", "SCRAM-SHA-512")


def test_an_access_prints_without_its_password(access: KafkaAccess) -> None:
    assert "pw-not-shown" not in repr(access) and "console" in repr(access)


def test_storage_formatted_without_the_admin_is_refused_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devtools import localinfra

    config = load_config("test", env={})
    monkeypatch.setattr(localinfra, "kafka_home", lambda _: tmp_path)
    localinfra.refuse_storage_without_credentials(config)  # nothing formatted yet: fine
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("node.id=1\n")
    with pytest.raises(localinfra.InfraError, match="localinfra reset"):
        localinfra.refuse_storage_without_credentials(config)
    (tmp_path / "formatted-with-scram").touch()  # what a format with the admin leaves
    localinfra.refuse_storage_without_credentials(config)
