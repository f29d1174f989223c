"""`capsearch embed --engine ray --address ADDRESS` on a two-node Ray cluster simulated on this machine
(``ray.cluster_utils.Cluster``: a head and a worker node, one CPU each, so the two actors land one per node)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.embed.cache import split_embeddings

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'capsearch[ray]')")
pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_cli_embeds_on_a_two_node_cluster(
    two_nodes, synthetic_small, tiny_model, artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.cli import build_parser
    from core.cli.console import main

    argv = [
        "embed",
        "--dataset",
        str(synthetic_small.dir),
        "--model",
        "capsearch-tiny",
        "--split",
        "test",
        "--batch-size",
        "4",
    ]
    assert main(build_parser(), [*argv, "--engine", "ray", "--address", two_nodes.address, "--json"]) == 0
    out = capsys.readouterr()
    row = json.loads(out.out)[0]
    assert (row["engine"], row["reused"], row["images"]) == ("ray", False, len(synthetic_small.split("test")))
    assert "on 2 Ray node(s)" in out.err
    assert not ray.is_initialized()  # the command closed the connection it opened

    on_ray = split_embeddings(tiny_model, synthetic_small, "test")
    assert on_ray.reused
    manifest = json.loads((Path(row["cache_dir"]) / "manifest.json").read_text())
    assert manifest["complete"] and manifest["model_id"] == "capsearch-tiny@random"
    Path(row["cache_dir"], "manifest.json").unlink()  # now the local engine, for comparison
    local = split_embeddings(tiny_model, synthetic_small, "test", batch_size=4)
    assert not local.reused
    assert np.abs(local.image_emb - on_ray.image_emb).max() <= 1e-6
    assert np.abs(local.caption_emb - on_ray.caption_emb).max() <= 1e-6


def test_an_address_nothing_listens_on_is_refused_at_once() -> None:
    import socket
    import time

    from core.embed.ray_engine import ray_session
    from core.errors import CapsearchError

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.perf_counter()
    refused = f"cannot connect to the Ray cluster at 127.0.0.1:{port}"
    with pytest.raises(CapsearchError, match=refused), ray_session(f"127.0.0.1:{port}"):
        pass
    assert time.perf_counter() - start < 10 and not ray.is_initialized()
