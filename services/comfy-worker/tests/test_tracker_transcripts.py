"""The run-tracking state machine, fed the frames a real ComfyUI 0.3.64 sent."""

from __future__ import annotations

from collections.abc import Callable

from comfyline.contracts import ErrorCode, OutputKind, OutputSpec
from comfyline.worker.errors import execution_failure
from comfyline.worker.frames import Executing, Preview, ProgressStep, Status
from comfyline.worker.replay import Transcript, frames, http_steps, posted, replay
from comfyline.worker.tracker import OutputFile, Phase, RunTracker

Load = Callable[[str], Transcript]


def test_uncached_run_succeeds_with_its_saved_file_and_comfyui_timing(transcript: Load) -> None:
    tracker = replay(transcript("01_uncached_run"))
    assert tracker.phase == Phase.SUCCEEDED and tracker.done
    assert tracker.files([OutputSpec(node="2", kind=OutputKind.IMAGE)]) == [
        OutputFile("2", "images", "tx_uncached_00001_.png", "", "output")
    ]
    assert tracker.progress().percent == 100.0
    assert tracker.gpu_seconds == (1795404150124 - 1795404150109) / 1000
    assert not tracker.fully_cached


def test_cached_rerun_reports_the_old_file_and_counts_as_success(transcript: Load) -> None:
    tracker = replay(transcript("02_cached_rerun"))
    assert tracker.phase == Phase.SUCCEEDED
    assert tracker.fully_cached
    assert [f.filename for f in tracker.files()] == ["tx_uncached_00001_.png"]


def test_batch_outputs_keep_their_order_and_temp_previews_are_left_out(transcript: Load) -> None:
    tracker = replay(transcript("03_batch_and_preview"))
    names = [f.filename for f in tracker.files()]
    assert names == ["tx_batch_00001_.png", "tx_batch_00002_.png", "tx_batch_00003_.png"]
    assert tracker.files([OutputSpec(node="3", kind=OutputKind.IMAGE)]) == []


def test_progress_steps_give_step_counts_and_a_rising_percent(transcript: Load) -> None:
    recorded = transcript("04_progress_node")
    body = posted(recorded)[0]
    tracker = RunTracker(body["prompt_id"], body["prompt"])
    percents, steps = [], []
    for frame in frames(recorded):
        update = tracker.feed(frame)
        if update.progressed:
            progress = tracker.progress()
            percents.append(progress.percent)
            if isinstance(frame, ProgressStep):
                steps.append((progress.step, progress.steps, progress.node_type))
    assert steps == [
        (0, 3, "SaveImageWebsocket"),
        (1, 3, "SaveImageWebsocket"),
        (2, 3, "SaveImageWebsocket"),
    ]
    assert percents == sorted(percents) and 0 < percents[-1] < 100
    assert tracker.progress().percent == 100.0  # once execution_success came
    # SaveImageWebsocket sends its images only as binary frames: no result files
    assert tracker.phase == Phase.SUCCEEDED and tracker.files() == []


def test_preview_with_metadata_names_its_prompt_and_node(transcript: Load) -> None:
    recorded = transcript("04b_progress_node_preview_metadata")
    body = posted(recorded)[0]
    previews = [f for f in frames(recorded) if isinstance(f, Preview)]
    assert len(previews) == 3
    assert {(p.prompt_id, p.node_id) for p in previews} == {(body["prompt_id"], "2")}
    tracker = RunTracker(body["prompt_id"], body["prompt"])
    got = [tracker.feed(f).preview for f in frames(recorded)]
    assert sum(p is not None for p in got) == 3


def test_execution_error_fails_with_node_and_exception(transcript: Load) -> None:
    tracker = replay(transcript("07_execution_error"))
    assert tracker.phase == Phase.FAILED
    error = execution_failure(tracker.error or {})
    assert error.code == ErrorCode.COMFY_EXECUTION_ERROR
    assert (error.node_id, error.node_type) == ("2", "ImageToMask")
    assert error.message.startswith("IndexError: index 3 is out of bounds")
    assert not error.transient


def test_other_prompts_frames_do_not_touch_ours(transcript: Load) -> None:
    # 07b: a slow prompt runs first on the same socket; ours then fails in LoadImage
    tracker = replay(transcript("07b_execution_error_loadimage"), 1)
    assert tracker.phase == Phase.FAILED
    assert execution_failure(tracker.error or {}).node_type == "LoadImage"
    assert tracker.outputs == {}  # the first prompt's PreviewImage is not ours


def test_interrupt_ends_the_run_interrupted_at_the_next_node(transcript: Load) -> None:
    tracker = replay(transcript("08_interrupt_running"))
    assert tracker.phase == Phase.INTERRUPTED
    assert tracker.interrupted is not None and tracker.interrupted.node_id == "12"


def test_deleted_pending_prompt_gets_no_frame_at_all(transcript: Load) -> None:
    recorded = transcript("09_queue_delete_pending")
    deleted = posted(recorded)[1]
    tracker = RunTracker(deleted["prompt_id"], deleted["prompt"])
    updates = [tracker.feed(f) for f in frames(recorded)]
    assert not any(u.started or u.finished for u in updates)
    assert tracker.phase == Phase.QUEUED  # the worker must resolve it itself


def test_prompt_without_client_id_finishes_no_tracker(transcript: Load) -> None:
    recorded = transcript("10_no_client_id")
    body = posted(recorded)[0]
    tracker = RunTracker(body["prompt_id"], body["prompt"])
    for frame in frames(recorded, "A", "B"):
        tracker.feed(frame)
    assert tracker.phase == Phase.QUEUED and not tracker.done


def test_a_second_client_sees_nothing_of_our_run(transcript: Load) -> None:
    recorded = transcript("11_two_clients")
    seen_by_b = frames(recorded, "B")
    assert all(isinstance(f, Status) for f in seen_by_b)
    tracker = replay(transcript("11_two_clients"), 0, "A")
    assert tracker.phase == Phase.SUCCEEDED


def test_reconnect_with_the_same_client_id_carries_on_to_the_end(transcript: Load) -> None:
    recorded = transcript("12_reconnect_same_client")
    a2 = frames(recorded, "A2")
    # the hazard: the new socket's first executing frame has no prompt_id
    first = next(f for f in a2 if isinstance(f, Executing))
    assert first.prompt_id is None and first.node == "10"
    tracker = replay(transcript("12_reconnect_same_client"), 0, "A", "A2")
    assert tracker.phase == Phase.SUCCEEDED and tracker.done
    assert tracker.files() == []  # only a PreviewImage (temp) in this graph


def test_history_entry_fills_in_a_run_whose_frames_were_missed(transcript: Load) -> None:
    recorded = transcript("01_uncached_run")
    body = posted(recorded)[0]
    entry = http_steps(recorded, "/history/")[0]["response"]["json"][body["prompt_id"]]
    tracker = RunTracker(body["prompt_id"], body["prompt"])
    tracker.merge_history(entry)
    assert tracker.phase == Phase.SUCCEEDED
    assert [f.filename for f in tracker.files()] == ["tx_uncached_00001_.png"]


def test_history_entry_of_a_failed_run_carries_the_error(transcript: Load) -> None:
    recorded = transcript("07_execution_error")
    body = posted(recorded)[0]
    entry = http_steps(recorded, "/history/")[0]["response"]["json"][body["prompt_id"]]
    tracker = RunTracker(body["prompt_id"], body["prompt"])
    tracker.merge_history(entry)
    assert tracker.phase == Phase.FAILED
    assert execution_failure(tracker.error or {}).node_type == "ImageToMask"
