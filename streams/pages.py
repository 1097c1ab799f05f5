"""Web pages every worker serves besides its table views."""

from __future__ import annotations

from typing import Any, cast

import faust


def add_readiness_page(app: faust.App) -> None:
    @app.page("/ready/")
    async def ready(web: Any, request: Any) -> Any:
        """200 once partitions are assigned and tables recovered; 503 while rebalancing."""
        recovered = cast(Any, app.tables).recovery.completed.is_set()  # not on the TableManagerT protocol
        assigned = bool(app.consumer.assignment()) if app.consumer else False
        state = {"rebalancing": app.rebalancing, "tables_recovered": recovered, "assigned": assigned}
        ok = recovered and not app.rebalancing and assigned
        return web.json({"status": "ready" if ok else "unready", **state}, status=200 if ok else 503)
