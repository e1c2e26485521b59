"""A 3-node JetStream cluster on loopback, streams and buckets made with the replica count from
settings (``*_NATS__REPLICAS``) through the comma-separated URL list, and the local stack's
choice of NATS (one server, a cluster started here, or one given)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.errors import NoRespondersError
from nats.js.errors import NoStreamResponseError
from nats.js.kv import KeyValue

from comfyline.contracts import Names, bucket_spec, stream_spec
from comfyline.runtime import Bus, NatsSettings
from comfyline.stack import NatsCluster, ServerError
from comfyline.stack.local import LocalStack


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


async def put_once_answered(kv: KeyValue, key: str, value: bytes) -> None:
    """Put, again while no stream answers yet: a stream just made in a cluster takes a moment
    to be reachable from every node (the services' publishes retry the same way)."""
    for _ in range(50):
        try:
            await kv.put(key, value)
            return
        except (NoRespondersError, NoStreamResponseError):
            await asyncio.sleep(0.1)
    await kv.put(key, value)


def test_the_cluster_has_three_nodes_each_on_its_own_ports_and_store(cluster: NatsCluster) -> None:
    assert len(cluster.nodes) == 3
    assert len({node.port for node in cluster.nodes}) == 3
    assert len({node.data_dir for node in cluster.nodes}) == 3
    assert cluster.urls.count(",") == 2
    assert cluster.node("comfyline-1") is cluster.nodes[1]


async def test_streams_and_buckets_get_the_replica_count_from_settings(
    cluster: NatsCluster,
) -> None:
    names = Names("r3")
    bus = await Bus.connect(NatsSettings(url=cluster.urls, replicas=3), names, "replicas-test")
    try:
        await bus.ensure_streams([stream_spec(names, "JOBS")])
        await bus.ensure_buckets([bucket_spec(names, "jobs")])
        for stream in (names.stream("JOBS"), f"KV_{names.bucket('jobs')}"):
            info = await bus.js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
            assert info.cluster is not None and info.cluster.leader
            # The leader and two followers, one on each node.
            followers = {replica.name for replica in info.cluster.replicas or []}
            assert followers | {info.cluster.leader} == {n.name for n in cluster.nodes}
        # Declaring again (another service starting) changes nothing and does not fail.
        await bus.ensure_streams([stream_spec(names, "JOBS")])
    finally:
        await bus.close()


async def test_a_bucket_made_with_fewer_replicas_gets_the_count_from_settings(
    cluster: NatsCluster,
) -> None:
    names = Names("grow")
    one = await Bus.connect(NatsSettings(url=cluster.urls, replicas=1), names, "r1")
    three = await Bus.connect(NatsSettings(url=cluster.urls, replicas=3), names, "r3")
    stream = f"KV_{names.bucket('jobs')}"
    try:
        await one.ensure_buckets([bucket_spec(names, "jobs")])
        kv = await one.kv(names.bucket("jobs"))
        await put_once_answered(kv, "kept", b"1")
        assert (await one.js.stream_info(stream)).config.num_replicas == 1
        await three.ensure_buckets([bucket_spec(names, "jobs")])
        info = await three.js.stream_info(stream)
        assert info.config.num_replicas == 3
        assert info.config.max_age == bucket_spec(names, "jobs").ttl_s  # the rest as it was
        assert (await (await three.kv(names.bucket("jobs"))).get("kept")).value == b"1"
    finally:
        await one.close()
        await three.close()


def test_the_local_stack_starts_a_cluster_of_nats_nodes_with_replicas_to_match(
    tmp_path: Path,
) -> None:
    stack = LocalStack(tmp_path, nats_nodes=3)
    try:
        stack._start_nats(on_step=lambda _: None)
        assert stack.replicas == 3 and len(stack.nats_urls) == 3
        nodes = {n: c for n, c in stack.all_children().items() if n.startswith("nats-server")}
        assert len(nodes) == 3 and all(child.alive() for child in nodes.values())
    finally:
        stack.stop()
    assert not any(child.alive() for child in nodes.values())


@pytest.mark.parametrize(
    ("layout", "refused"),
    [
        ({"nats_nodes": 1, "nats_replicas": 3}, "3 replicas need as many NATS nodes"),
        ({"nats_url": "nats://127.0.0.1:4222", "nats_nodes": 3}, "not both"),
        ({"gateways": 0}, "at least 1"),
    ],
)
def test_a_layout_that_cannot_work_is_refused_before_anything_starts(
    tmp_path: Path, layout: dict[str, Any], refused: str
) -> None:
    with pytest.raises(ServerError, match=refused):
        LocalStack(tmp_path, **layout).start(on_step=lambda _: None)
    assert not (tmp_path / "nats").exists()


def test_on_a_given_nats_one_replica_unless_told() -> None:
    given = "nats://127.0.0.1:4222,nats://127.0.0.1:4223"
    assert LocalStack(Path("unused"), nats_url=given).replicas == 1
    assert LocalStack(Path("unused"), nats_url=given, nats_replicas=2).replicas == 2
