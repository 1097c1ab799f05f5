from connectors.tracing import continue_or_start, new_traceparent, trace_id_of


def test_a_new_trace_is_valid_w3c_and_unique() -> None:
    parents = {new_traceparent() for _ in range(1000)}
    assert len(parents) == 1000
    for parent in parents:
        version, trace_id, span_id, flags = parent.split("-")
        assert (version, flags, len(trace_id), len(span_id)) == ("00", "01", 32, 16)
        assert trace_id_of(parent) == trace_id
        assert int(span_id, 16) != 0


def test_a_child_keeps_the_trace_and_gets_a_new_span() -> None:
    parent = new_traceparent()
    child = continue_or_start(parent)
    assert trace_id_of(child) == trace_id_of(parent)
    assert child.split("-")[2] != parent.split("-")[2]


def test_an_invalid_parent_starts_a_new_trace() -> None:
    for bad in (None, "", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "garbage"):
        assert trace_id_of(continue_or_start(bad)) is not None
