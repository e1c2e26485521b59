"""Subject builders check their tokens and keep namespaces apart."""

from __future__ import annotations

import pytest

from comfyline.contracts import InvalidToken, Names, owner_token, token


def test_production_names_have_no_prefix() -> None:
    names = Names()
    assert names.work("cpu-smoke") == "work.cpu-smoke"
    assert names.job_event("u1", "job_1", "completed") == "jobs.u1.job_1.completed"
    assert names.run_event("job_1", "progress") == "runs.job_1.progress"
    assert names.cancel("job_1") == "control.cancel.job_1"
    assert names.enhance() == "enhance.v1"
    assert names.policy() == "policy.v1"
    assert names.stream("JOBS") == "JOBS"
    assert names.bucket("jobs") == "jobs"


def test_namespaces_prefix_every_subject_stream_and_bucket() -> None:
    names = Names("t42")
    assert names.work("m") == "t42.work.m"
    assert names.job_events_filter("job_1") == "t42.jobs.*.job_1.>"
    assert names.owner_events_filter("u1") == "t42.jobs.u1.>"
    assert names.submissions_filter() == "t42.jobs.*.*.submitted"
    assert names.stream("WORK") == "t42_WORK"
    assert names.bucket("workers") == "t42_workers"
    assert names.queue_group("enhancer") == "t42_enhancer"


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "a*", ">", "x" * 129, "ü"])
def test_unsafe_tokens_are_refused(bad: str) -> None:
    with pytest.raises(InvalidToken):
        token(bad)
    with pytest.raises(InvalidToken):
        Names().work(bad)


def test_a_namespace_must_be_a_token() -> None:
    with pytest.raises(InvalidToken):
        Names("a.b")


def test_owner_tokens_are_safe_and_stable() -> None:
    assert owner_token("user_1") == "user_1"
    email = owner_token("someone@example.com")
    assert email == owner_token("someone@example.com")
    assert email != owner_token("other@example.com")
    token(email)
    Names().job_event(email, "job_1", "submitted")


def test_advisory_subject_names_the_work_consumer() -> None:
    names = Names("ns1")
    assert names.max_deliveries_advisory("cpu-smoke") == (
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ns1_WORK.work-cpu-smoke"
    )


def test_batch_work_has_its_own_subject_and_consumer() -> None:
    names = Names("t1")
    assert names.work("m", "batch") == "t1.work.m.batch"
    assert names.work_consumer("m", "batch") == "work-m-batch"
    assert names.work_consumer("m") == "work-m"
    assert names.work_key("t1.work.m.batch") == ("m", "batch")
    assert names.work_key(names.work("m")) == ("m", "interactive")
