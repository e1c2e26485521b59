"""A 3-node JetStream cluster on loopback, and streams and buckets made with the replica count
from settings (``*_NATS__REPLICAS``), reached through the comma-separated URL list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from comfyline.contracts import Names, bucket_spec, stream_spec
from comfyline.runtime import Bus, NatsSettings
from comfyline.stack import NatsCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


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
