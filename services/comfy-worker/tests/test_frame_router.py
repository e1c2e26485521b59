"""One socket per server: each prompt's frames reach its own run, in the order a real ComfyUI
0.3.64 sent them on one socket."""

from __future__ import annotations

from collections.abc import Callable

from comfyline.worker.comfy_socket import (
    Event,
    FrameRouter,
    PromptFeed,
    Reconnected,
    Resolved,
    SocketDead,
    SocketLost,
)
from comfyline.worker.errors import execution_failure
from comfyline.worker.frames import Executing, Preview
from comfyline.worker.replay import Transcript, frames, posted
from comfyline.worker.tracker import Phase, RunTracker

Load = Callable[[str], Transcript]


async def drain(feed: PromptFeed) -> list[Event]:
    """What ``feed`` holds now, in order."""
    found = []
    while (event := await feed.next_event(0)) is not None:
        found.append(event)
    return found


async def routed(recorded: Transcript, extra: tuple[str, ...] = ()) -> dict[str, list[Event]]:
    """Every recorded frame routed to feeds of the recording's prompts (and of ``extra``
    prompt ids that ComfyUI never ran); what each feed received, by prompt id."""
    router = FrameRouter()
    feeds = [PromptFeed("client", body["prompt_id"]) for body in posted(recorded)]
    feeds += [PromptFeed("client", prompt_id) for prompt_id in extra]
    for feed in feeds:
        router.add(feed)
    for frame in frames(recorded):
        router.route(frame)
    return {feed.prompt_id: await drain(feed) for feed in feeds}


def tracked(recorded: Transcript, which: int, events: list[Event]) -> RunTracker:
    body = posted(recorded)[which]
    tracker = RunTracker(body["prompt_id"], body["prompt"])
    for event in events:
        assert not isinstance(event, SocketLost | Reconnected | SocketDead | Resolved)
        tracker.feed(event)
    return tracker


async def test_two_prompts_on_one_socket_each_get_their_own_frames(transcript: Load) -> None:
    # 07b: a slow prompt runs first; the second, posted on the same socket, fails in LoadImage.
    recorded = transcript("07b_execution_error_loadimage")
    first, second = (body["prompt_id"] for body in posted(recorded))
    got = await routed(recorded)
    for prompt_id, events in got.items():
        assert {getattr(e, "prompt_id", None) for e in events} <= {prompt_id, None}
    slow = tracked(recorded, 0, got[first])
    assert slow.phase == Phase.SUCCEEDED and slow.done
    failed = tracked(recorded, 1, got[second])
    assert failed.phase == Phase.FAILED and failed.done
    assert execution_failure(failed.error or {}).node_type == "LoadImage"
    assert failed.outputs == {}  # the first prompt's PreviewImage is not its


async def test_previews_naming_no_prompt_go_to_the_one_executing(transcript: Load) -> None:
    recorded = transcript("04_progress_node")
    [ours] = (body["prompt_id"] for body in posted(recorded))
    got = await routed(recorded, extra=("waiting-behind-it",))
    previews = [e for e in got[ours] if isinstance(e, Preview)]
    assert len(previews) == 3
    assert got["waiting-behind-it"] == []
    tracker = tracked(recorded, 0, got[ours])
    assert tracker.phase == Phase.SUCCEEDED


async def test_socket_events_reach_every_prompt_and_a_done_marker_ends_the_executing_one() -> None:
    router = FrameRouter()
    a, b = PromptFeed("c", "a"), PromptFeed("c", "b")
    router.add(a)
    router.add(b)
    router.route(Executing(prompt_id="a", node="1"))
    router.route(SocketLost("closed"))
    router.route(Reconnected())
    router.route(Executing(prompt_id=None, node="1"))  # the hint after a reconnect: a's
    router.route(Executing(prompt_id="a", node=None))
    router.route(Preview(b"x", "image/png"))  # nothing executes now: dropped
    router.remove(b)
    router.route(SocketLost("closed"))
    assert await drain(b) == [SocketLost("closed"), Reconnected()]
    assert await drain(a) == [
        Executing(prompt_id="a", node="1"),
        SocketLost("closed"),
        Reconnected(),
        Executing(prompt_id=None, node="1"),
        Executing(prompt_id="a", node=None),
        SocketLost("closed"),
    ]
