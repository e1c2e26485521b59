"""`/api/jobs` of the newer releases (absent on 0.3.64, where the static fallback answers 404 for
GET and 405 for POST): one job view over the queue and the history, and cancel by id."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from comfyline.comfyui_sim.history import HistoryEntry
from comfyline.comfyui_sim.prompt_queue import QueueItem
from comfyline.comfyui_sim.routes import canonical_uuid, sim_of

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
jobs_routes = web.RouteTableDef()


def _prune(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _from_queue(item: QueueItem, status: str, detail: bool) -> dict[str, Any]:
    job = _prune(
        {
            "id": item.prompt_id,
            "status": status,
            "priority": item.number,
            "create_time": item.extra_data.get("create_time"),
            "outputs_count": 0,
            "previewable_outputs_count": 0,
        }
    )
    if detail:
        job["workflow"] = {"prompt": item.prompt, "extra_data": item.extra_data}
    return job


def _from_history(prompt_id: str, entry: HistoryEntry, detail: bool) -> dict[str, Any]:
    number, _, prompt, extra_data, _ = entry["prompt"]
    status_info = entry.get("status") or {}
    start = end = error = None
    interrupted = False
    for event, data in status_info.get("messages", []):
        if event == "execution_start":
            start = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            end = data.get("timestamp")
            error = data if event == "execution_error" else error
            interrupted = interrupted or event == "execution_interrupted"
    if status_info.get("status_str") == "error":
        status = "cancelled" if interrupted else "failed"
    else:
        status = "completed"
    outputs = entry.get("outputs", {})
    files = [
        item
        for node in outputs.values()
        for kind, items in node.items()
        if kind != "animated" and isinstance(items, list)
        for item in items
        if isinstance(item, dict)
    ]
    job = _prune(
        {
            "id": prompt_id,
            "status": status,
            "priority": number,
            "create_time": extra_data.get("create_time"),
            "execution_start_time": start,
            "execution_end_time": end,
            "execution_error": error,
            "outputs_count": len(files),
            "previewable_outputs_count": len(files),
            "preview_output": files[0] if files else None,
        }
    )
    if detail:
        job["outputs"] = outputs
        job["execution_status"] = status_info
        job["workflow"] = {"prompt": prompt, "extra_data": extra_data}
    return job


def find_job(request: web.Request, job_id: str, detail: bool) -> dict[str, Any] | None:
    queue = sim_of(request).queue
    entry = queue.history.get(job_id).get(job_id)
    if entry is not None:
        return _from_history(job_id, entry, detail)
    for item in queue.running():
        if item.prompt_id == job_id:
            return _from_queue(item, "in_progress", detail)
    for item in queue.pending():
        if item.prompt_id == job_id:
            return _from_queue(item, "pending", detail)
    return None


@jobs_routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    queue = sim_of(request).queue
    query = request.rel_url.query
    wanted = [s.strip().lower() for s in query.get("status", "").split(",") if s.strip()]
    if any(s not in STATUSES for s in wanted):
        return web.json_response({"error": "Invalid status value(s)"}, status=400)
    jobs = [_from_queue(item, "in_progress", False) for item in queue.running()]
    jobs += [_from_queue(item, "pending", False) for item in queue.pending()]
    jobs += [_from_history(pid, e, False) for pid, e in queue.history.snapshot().items()]
    if wanted:
        jobs = [job for job in jobs if job["status"] in wanted]
    jobs.sort(key=lambda job: job.get("create_time", 0), reverse=query.get("sort_order") != "asc")
    offset = max(0, int(query.get("offset", "0")))
    limit = int(query["limit"]) if "limit" in query else None
    page = jobs[offset : offset + limit if limit is not None else None]
    pagination = {
        "offset": offset,
        "limit": limit,
        "total": len(jobs),
        "has_more": offset + len(page) < len(jobs),
    }
    return web.json_response({"jobs": page, "pagination": pagination})


@jobs_routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job = find_job(request, request.match_info["job_id"], detail=True)
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


def _cancel(request: web.Request, job_id: str) -> bool:
    sim = sim_of(request)
    if sim.queue.is_running(job_id):
        sim.executor.interrupt()
        return True
    return sim.queue.delete(job_id)


@jobs_routes.post("/api/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    return web.json_response({"cancelled": _cancel(request, request.match_info["job_id"])})


@jobs_routes.post("/api/jobs/cancel")
async def cancel_jobs(request: web.Request) -> web.Response:
    try:
        json_data = await request.json()
    except ValueError:
        return web.json_response({"error": "Request body must be valid JSON"}, status=400)
    job_ids = json_data.get("job_ids") if isinstance(json_data, dict) else None
    if not isinstance(job_ids, list):
        return web.json_response({"error": "job_ids must be a list"}, status=400)
    invalid = []
    for job_id in job_ids:
        try:
            canonical_uuid(job_id)
        except (ValueError, AttributeError, TypeError):
            invalid.append(job_id if isinstance(job_id, str) else repr(job_id))
    if invalid:
        return web.json_response(
            {"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}, status=400
        )
    cancelled = False
    for job_id in job_ids:
        cancelled = _cancel(request, job_id) or cancelled
    return web.json_response({"cancelled": cancelled})
