"""`slm serve --ray`: the same FastAPI app and engine in every Ray Serve replica.

Ray does the distributed part: its proxy routes each HTTP request to a replica (power of two
choices on ongoing requests), streams the response back, autoscales on ongoing requests and
replaces a replica whose actor dies or whose `check_health` raises. Each replica is a whole
`slm serve` (`create_app`), so the three APIs, auth, limits and errors are those of one server.

Ray's prefix-cache affinity router (`ray.serve.llm`) reads the prompt from handle calls; requests
that enter through the HTTP proxy reach an ingress replica as raw ASGI, so it cannot route them and
is not used here.

The model store is read by every replica: on one machine they share SLMKIT_HOME; on a cluster
mount the same volume at the same path on every node (deploy/README.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from dataclasses import dataclass

from slmkit.errors import BackendUnavailableError, InvalidParameterError
from slmkit.server.config import ServerConfig

log = logging.getLogger("slmkit.scale")

APP_NAME = "slmkit"
REPLICA_HEADER = "x-slmkit-replica"


@dataclass
class RayServeOptions:
    """How many replicas, how they scale, where Ray runs."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max) replicas; None: a fixed `replicas`
    address: str | None = None  # join this cluster; None: start a local Ray for this command
    target_ongoing_requests: float | None = None  # per replica; None: half the decode slots
    health_check_period_s: float = 10.0

    @staticmethod
    def parse_autoscale(text: str) -> tuple[int, int]:
        low, sep, high = text.partition(":")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise InvalidParameterError("--autoscale", f"{text!r} is not MIN:MAX (for example 1:4)")
        lo, hi = int(low), int(high)
        if hi < 1 or lo > hi:
            raise InvalidParameterError("--autoscale", f"{text!r}: need 0 <= MIN <= MAX and MAX >= 1")
        return lo, hi


def require_ray():
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise BackendUnavailableError(
            f"--ray needs Ray Serve: pip install 'slmkit[ray]' ({exc})") from exc
    return ray, serve


def cpus_per_replica(config: ServerConfig) -> int:
    """Ray reserves as many CPUs as the replica's engine runs threads, so replicas do not share cores."""
    return config.threads or 1


def with_replica_threads(config: ServerConfig, replicas: int) -> ServerConfig:
    """No --threads: this machine's cores split between the replicas (an engine left to its
    default would take every core, in every replica)."""
    if config.threads is not None:
        return config
    return dataclasses.replace(config, threads=max(1, (os.cpu_count() or 1) // max(1, replicas)))


class SlmkitReplica:
    """One replica: builds the app inside the replica process (nothing of it is pickled)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.slmkit_app = None  # `app` is taken by Ray's wrapper

    def __serve_build_asgi_app__(self):
        from ray import serve

        from slmkit.server.app import create_app

        app = create_app(self.config)
        replica = serve.get_replica_context().replica_id.unique_id

        @app.middleware("http")
        async def name_replica(request, call_next):
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = replica
            return response

        self.slmkit_app = app
        return app

    def check_health(self) -> None:
        """Raising marks this replica unhealthy; Ray then replaces it (the same test as /health)."""
        if self.slmkit_app is None:
            return
        manager = self.slmkit_app.state.ctx.manager
        dead = [name for name, m in list(manager.loaded.items()) if not m.engine.loop.alive]
        if dead:
            raise RuntimeError(f"engine loop dead for {', '.join(dead)}")


def build_application(config: ServerConfig, options: RayServeOptions):
    """The Ray Serve application (`serve.run` it): deployment options from our flags."""
    _, serve = require_ray()
    # A replica takes `parallel` sequences at once plus its own queue; beyond that Ray holds
    # requests at the proxy and routes them to whichever replica frees up first.
    deployment_options: dict = {
        "name": "SlmkitServer",
        "ray_actor_options": {"num_cpus": cpus_per_replica(config), "runtime_env": {"env_vars": _replica_env()}},
        "max_ongoing_requests": config.parallel + config.max_queue,
        "health_check_period_s": options.health_check_period_s,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": 30.0,
    }
    if options.autoscale:
        low, high = options.autoscale
        deployment_options["autoscaling_config"] = {
            "min_replicas": low, "max_replicas": high, "initial_replicas": max(low, 1),
            "target_ongoing_requests": options.target_ongoing_requests or max(1.0, config.parallel / 2),
        }
    else:
        deployment_options["num_replicas"] = options.replicas
    cls = serve.ingress()(SlmkitReplica)
    return serve.deployment(**deployment_options)(cls).bind(config)


def app_builder(args: dict):
    """Entry for a Serve config (KubeRay `serveConfigV2`, `serve run`): ``args`` are `slm serve`
    settings (models, threads, parallel, context_length, max_queue, replicas); replica counts and
    autoscaling given in the config's `deployments` override ours."""
    known = {"models", "threads", "parallel", "context_length", "max_queue", "replicas"}
    unknown = set(args) - known
    if unknown:
        raise InvalidParameterError("args", f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
    config = ServerConfig(host="0.0.0.0", models=list(args.get("models", [])), threads=args.get("threads"),
                          parallel=int(args.get("parallel", 8)), context_length=args.get("context_length"),
                          max_queue=int(args.get("max_queue", 64)), api_keys=ServerConfig.keys_from_env())
    return build_application(config, RayServeOptions(replicas=int(args.get("replicas", 1))))


def _replica_env() -> dict[str, str]:
    """Settings replicas on other nodes must share with the command: the store's path (API keys
    travel in the config; provider credentials belong to each node's own environment)."""
    keep = ("SLMKIT_HOME", "SLMKIT_LLAMA_LOG")
    return {k: os.environ[k] for k in keep if k in os.environ}


def serve_with_ray(config: ServerConfig, options: RayServeOptions, *, log_level: str = "info") -> None:
    """Run until SIGINT / SIGTERM, then take the app down (and the local Ray this command started)."""
    ray, serve = require_ray()
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    replicas = options.autoscale[1] if options.autoscale else options.replicas
    config = with_replica_threads(config, replicas)
    if options.address:
        ray.init(address=options.address, logging_level=log_level.upper())
    else:
        # Ray's memory monitor kills workers when the whole machine passes 95% memory, whoever
        # uses it: on a shared box it killed healthy replicas for other programs' memory. The
        # kernel's OOM killer still guards the machine.
        os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
        # Logical CPUs, enough for every replica's reservation: on a small box Ray would otherwise
        # keep the second replica pending forever.
        ray.init(num_cpus=max(os.cpu_count() or 1, replicas * cpus_per_replica(config)),
                 include_dashboard=False, logging_level=log_level.upper())
    # After ray.init: Ray installs a SIGTERM handler of its own that aborts the process, and an
    # orchestrator's SIGTERM must take the app down and exit 0 instead.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": config.host, "port": config.port,
                                  "request_timeout_s": config.request_timeout + 30})
        serve.run(build_application(config, options), name=APP_NAME, route_prefix="/")
        log.info("serving on http://%s:%d through Ray Serve (%s)", config.host, config.port,
                 f"autoscaling {options.autoscale[0]}..{options.autoscale[1]} replicas" if options.autoscale
                 else f"{options.replicas} replicas")
        print(f"slmkit on Ray Serve: http://{config.host}:{config.port}", flush=True)
        stop.wait()
    finally:
        if options.address:
            serve.delete(APP_NAME)  # the cluster keeps running; only our app leaves it
        else:
            serve.shutdown()
        ray.shutdown()
