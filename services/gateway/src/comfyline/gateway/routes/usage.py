"""``/v1/usage``: jobs, GPU seconds and cost per model and period (from the ``usage`` bucket)."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from comfyline.contracts import ErrorCode, owner_token

from ..deps import GatewayDep, StatusUser, owner_param
from ..errors import ApiError, error_responses
from ..schemas import UsageItem, UsagePublic

router = APIRouter(prefix="/v1/usage", tags=["usage"])
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@router.get("", summary="Usage and cost", responses=error_responses(401, 403, 422, 429, 503))
async def usage(
    user: StatusUser,
    gw: GatewayDep,
    owner: Annotated[str | None, Query(max_length=256, description="admins: any owner")] = None,
    period: Literal["day", "month"] = "day",
    since: Annotated[str | None, Query(description="YYYY-MM-DD (default: 30 days ago)")] = None,
    until: Annotated[str | None, Query(description="YYYY-MM-DD (default: today)")] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
) -> UsagePublic:
    """The owner's jobs, GPU seconds and cost per model, per day or month."""
    who = owner_param(user, owner)
    today = datetime.now(UTC).date()
    first = since or (today - timedelta(days=30)).isoformat()
    last = until or today.isoformat()
    for value in (first, last):
        if not DAY.match(value):
            raise ApiError(422, ErrorCode.VALIDATION_ERROR, "since/until are YYYY-MM-DD")
    sums: dict[tuple[str, str], UsageItem] = defaultdict(lambda: UsageItem(period="", model=""))
    for record in await gw.limits.usage_records(owner_token(who)):
        if not first <= record.day <= last or (model and record.model != model):
            continue
        key = (record.day if period == "day" else record.day[:7], record.model)
        item = sums[key]
        item.period, item.model = key
        item.jobs += record.jobs
        item.succeeded += record.succeeded
        item.failed += record.failed
        item.gpu_seconds += record.gpu_seconds
        item.cost += record.cost
    data = [sums[k] for k in sorted(sums)]
    totals = UsageItem(
        period="total",
        model=model or "*",
        jobs=sum(i.jobs for i in data),
        succeeded=sum(i.succeeded for i in data),
        failed=sum(i.failed for i in data),
        gpu_seconds=round(sum(i.gpu_seconds for i in data), 6),
        cost=round(sum(i.cost for i in data), 6),
    )
    return UsagePublic(owner=who, period=period, since=first, until=last, data=data, totals=totals)
