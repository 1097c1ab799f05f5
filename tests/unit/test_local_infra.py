import base64
import uuid

from devtools import localinfra


def test_a_cluster_id_never_starts_with_a_dash_even_when_the_random_bytes_would(monkeypatch):
    # 0xf8 encodes to "-" in URL-safe base64: the first draw would be read as an option.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x10" + bytes(15))])
    monkeypatch.setattr(localinfra.uuid, "uuid4", lambda: next(draws))

    cluster_id = localinfra.new_cluster_id()

    assert not cluster_id.startswith("-")
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
