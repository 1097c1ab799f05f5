"""Table values written by faust's JSON codec and by ours read back the same through either."""

from __future__ import annotations

from faust.serializers import codecs

from streams.table_codec import NAME, install_table_codec

ROW = {
    "payment_id": "0b1c7a7e-4d0e-4a53-9a55-0f7e6c3e1d11",
    "amount": 1_999,
    "status": "completed",
    "operations": [{"operation_id": "op-1", "amount": 1_999, "applied": True, "reason": None}],
    "context": {"traceparent": "00-abc-def-01", "request_id": "r-1"},
    "description": "café, 50 % off",
}


def test_rows_cross_between_faust_json_and_orjson_unchanged() -> None:
    install_table_codec()
    ours, faust_json = codecs.get_codec(NAME), codecs.get_codec("json")
    assert ours.loads(faust_json.dumps(ROW)) == ROW
    assert faust_json.loads(ours.dumps(ROW)) == ROW
    assert ours.loads(ours.dumps(ROW)) == ROW
