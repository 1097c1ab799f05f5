"""How a process connects to Kafka as itself: the broker address and its principal's login,
turned into the settings each client library wants.

Every Kafka client of the code base is built from a `KafkaAccess` (`kafka_access(config,
principal)`), so none can connect anonymously: the broker's client listener speaks only SASL
SCRAM-SHA-512 and authorises every request against the ACLs of `connectors/kafka_acl.py`
(docs/security.md). SCRAM never sends the password itself, so plain TCP on loopback does not
reveal it; TLS would add `SASL_SSL` and a CA file here.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.config import Config, ConfigError, load_config, state_dir
from connectors.credentials import ADMIN, CONSOLE, Login, ensure_credentials, kafka_login, write_private
from connectors.kafka_requests import count_kafka_requests

if TYPE_CHECKING:
    import faust

SECURITY_PROTOCOL = "SASL_PLAINTEXT"
MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class KafkaAccess:
    """Where the broker is and who connects; prints without the password."""

    servers: str
    login: Login

    @property
    def principal(self) -> str:
        return self.login.username

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        return {
            "bootstrap_servers": self.servers,
            "security_protocol": SECURITY_PROTOCOL,
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": self.login.username,
            "sasl_plain_password": self.login.password,
        }

    def confluent(self) -> dict[str, Any]:
        """The settings of a confluent-kafka (librdkafka) client."""
        return {
            "bootstrap.servers": self.servers,
            "security.protocol": SECURITY_PROTOCOL,
            "sasl.mechanisms": MECHANISM,
            "sasl.username": self.login.username,
            "sasl.password": self.login.password,
        }

    def faust_credentials(self) -> faust.SASLCredentials:
        """faust hands these to aiokafka as the four SASL keyword arguments above."""
        import faust

        return faust.SASLCredentials(username=self.login.username, password=self.login.password, mechanism=MECHANISM)

    def properties(self) -> str:
        """A Java client properties file (the Kafka CLI tools' --command-config)."""
        # The JAAS value is quoted Java-style; generated passwords are URL-safe base64, no quotes.
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.login.username}" password="{self.login.password}";'
        )
        return "\n".join(
            [
                f"bootstrap.servers={self.servers}",
                f"security.protocol={SECURITY_PROTOCOL}",
                f"sasl.mechanism={MECHANISM}",
                f"sasl.jaas.config={jaas}",
                "",
            ]
        )


def kafka_access(config: Config, principal: str) -> KafkaAccess:
    """`principal`'s access to this environment's broker (its password from the credentials file)."""
    count_kafka_requests()
    return KafkaAccess(config.kafka.bootstrap_servers, kafka_login(config, principal))


def write_client_properties(config: Config, principal: str) -> Path:
    """The CLI tools' properties for `principal`, owner-only, under .local/<environment>/."""
    path = state_dir(config) / f"kafka-{principal}.properties"
    write_private(path, kafka_access(config, principal).properties())
    return path


def write_compose_env(config: Config) -> Path:
    """docker-compose.kafka.yml's variables (the broker's admin password), owner-only."""
    path = state_dir(config) / "compose.env"
    write_private(path, f"KAFKA_ADMIN_PASSWORD={kafka_login(config, ADMIN).password}\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """`properties NAME`: write NAME's client properties file (bin/kafka-tool's --command-config);
    `compose-env`: write the env file docker-compose.kafka.yml needs. Each prints the path."""
    parser = argparse.ArgumentParser(prog="python -m connectors.kafka_security", description=main.__doc__)
    parser.add_argument("command", choices=["properties", "compose-env"])
    parser.add_argument("principal", nargs="?", default=CONSOLE)
    args = parser.parse_args(argv)
    config = load_config()
    try:
        if args.command == "compose-env":
            ensure_credentials(config)  # compose starts the broker: its admin is made here
            print(write_compose_env(config))
        else:
            print(write_client_properties(config, args.principal))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
