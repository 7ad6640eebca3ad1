"""`slm serve --ray` flags turned into Ray Serve deployment options (no Ray started)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.serve")

from slmkit.errors import InvalidParameterError  # noqa: E402
from slmkit.scale.ray_serve import RayServeOptions, build_application, with_replica_threads  # noqa: E402
from slmkit.server.config import ServerConfig  # noqa: E402


def deployment(config: ServerConfig, options: RayServeOptions):
    return build_application(config, options)._bound_deployment


def test_fixed_replicas_reserve_their_threads_as_cpus():
    d = deployment(ServerConfig(threads=3, parallel=4, max_queue=10), RayServeOptions(replicas=2))
    assert d.num_replicas == 2
    assert d.ray_actor_options["num_cpus"] == 3
    assert d.max_ongoing_requests == 14  # decode slots + queue; beyond that requests wait at the proxy


def test_autoscaling_targets_half_the_slots():
    d = deployment(ServerConfig(threads=1, parallel=8), RayServeOptions(autoscale=(1, 4)))
    cfg = d._deployment_config.autoscaling_config
    assert (cfg.min_replicas, cfg.max_replicas, cfg.target_ongoing_requests) == (1, 4, 4.0)


@pytest.mark.parametrize("text,lo_hi", [("1:4", (1, 4)), ("0:2", (0, 2)), ("3:3", (3, 3))])
def test_autoscale_parses(text, lo_hi):
    assert RayServeOptions.parse_autoscale(text) == lo_hi


@pytest.mark.parametrize("text", ["4", "a:b", "3:1", "0:0", "-1:2", ":"])
def test_bad_autoscale_is_refused(text):
    with pytest.raises(InvalidParameterError, match="--autoscale"):
        RayServeOptions.parse_autoscale(text)


def test_cores_are_split_between_replicas_without_threads(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert with_replica_threads(ServerConfig(), 4).threads == 2
    assert with_replica_threads(ServerConfig(), 16).threads == 1
    assert with_replica_threads(ServerConfig(threads=3), 4).threads == 3
