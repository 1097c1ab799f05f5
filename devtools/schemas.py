"""Released schemas: freeze the current ones before they reach the log, and check that every
released version stays readable by the current schema.

    python -m devtools.schemas freeze | check
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from fastavro import schemaless_reader, schemaless_writer

from connectors.avro.catalog import SCHEMAS_DIR, SchemaCatalog, plain, snake_case
from tests.support.avro_samples import sample_datum, variant_count


def compatibility_problems(catalog: SchemaCatalog) -> list[str]:
    """Every released schema version must be readable by the current schema."""
    problems = []
    for event_type, versions in sorted(catalog.released().items()):
        if event_type not in catalog.event_types():
            problems.append(f"{event_type}: released (v{max(versions)}) but has no current schema")
            continue
        reader = plain(catalog.expanded(event_type))
        for version, raw in sorted(versions.items()):
            writer = plain(raw)
            for variant in range(variant_count(writer)):
                out = io.BytesIO()
                try:
                    schemaless_writer(out, writer, sample_datum(writer, variant))
                    out.seek(0)
                    schemaless_reader(out, writer, reader)
                # Whatever fastavro raises here, old data would not be readable.
                except Exception as exc:  # noqa: BLE001
                    problems.append(
                        f"{event_type}: current schema cannot read v{version} data: {type(exc).__name__}: {exc}"
                    )
                    break
    return problems


def unreleased(catalog: SchemaCatalog) -> list[str]:
    """Event types whose current schema is not yet frozen in schemas/released/.

    Whatever a worker writes must stay readable after the next change, so the current schema
    is frozen before it reaches the log, not when it is replaced."""
    frozen = {SchemaCatalog._fp_of(raw) for versions in catalog.released().values() for raw in versions.values()}
    return [e for e in catalog.event_types() if catalog.fingerprint(e) not in frozen]


def freeze_released(catalog: SchemaCatalog | None = None) -> list[Path]:
    """Write <event>.v<next>.avsc for every event whose current schema is not frozen yet; never overwrites."""
    catalog = catalog or SchemaCatalog.default()
    released = catalog.released()
    target = catalog.root / "released"
    target.mkdir(exist_ok=True)
    written = []
    for event_type in unreleased(catalog):
        version = max(released.get(event_type, {0: None})) + 1
        path = target / f"{snake_case(event_type)}.v{version}.avsc"
        if path.exists():
            continue
        path.write_text(json.dumps(catalog.expanded(event_type), indent=2) + "\n")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if argv == ["freeze"]:
        for path in freeze_released(SchemaCatalog(SCHEMAS_DIR)):
            print(f"wrote {path}")
        return 0
    if argv == ["check"]:
        problems = compatibility_problems(SchemaCatalog(SCHEMAS_DIR))
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print("all released schemas are readable by the current schemas")
        return 1 if problems else 0
    print("usage: python -m devtools.schemas {freeze|check}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
