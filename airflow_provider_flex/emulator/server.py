"""Running the emulator: in a background thread for tests and demos, or as ``flex-emulator``."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import uvicorn

from airflow_provider_flex.emulator.admin import EmulatorAdmin
from airflow_provider_flex.emulator.app import ADMIN_PREFIX, create_app
from airflow_provider_flex.emulator.batch import BatchSettings
from airflow_provider_flex.emulator.config import QUOTA_DETAILS, EmulatorConfig
from airflow_provider_flex.emulator.faults import FAULT_KINDS
from airflow_provider_flex.emulator.quotas import QUOTA_WINDOWS, ModelQuota
from airflow_provider_flex.pricing import FLEX_MODELS


class FlexEmulator:
    """An emulator on a free port in a background thread; stop it or use ``with``.

    >>> with FlexEmulator(slots=2, service_time=(0.1, 0.2)) as emulator:
    ...     client = genai.Client(api_key="k", http_options={"base_url": emulator.base_url})
    """

    def __init__(self, config: EmulatorConfig | None = None, **settings: Any) -> None:
        self.config = replace(config or EmulatorConfig(), **settings)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.base_url = ""
        self.admin: EmulatorAdmin | None = None

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def start(self) -> FlexEmulator:
        self._socket = bind_socket(self.config.host, self.config.port)
        host, port = self._socket.getsockname()[:2]
        self.base_url = f"http://{_url_host(host)}:{port}"
        self._server = uvicorn.Server(_uvicorn_config(self.config))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="flex-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the flex emulator did not start")
            time.sleep(0.01)
        self.admin = EmulatorAdmin(self.base_url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self.admin is not None:
            self.admin.close()
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def connection_json(self, api_key: str = "emulator-key", **extra: Any) -> str:
        """Return this emulator as a ``gemini_flex`` Airflow connection, for ``AIRFLOW_CONN_<ID>``.

        ``extra`` holds connection settings such as ``initial_delay`` or ``timeout``.
        """
        return json.dumps({"conn_type": "gemini_flex", "host": self.base_url, "password": api_key, "extra": extra})

    def __enter__(self) -> FlexEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections (else ~40 ms per answer).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _uvicorn_config(config: EmulatorConfig, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        create_app(config),
        log_level=log_level,
        access_log=False,
        lifespan="off",
        loop="asyncio",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
        backlog=2048,
    )


def _range(text: str, kind: type[float] | type[int]) -> tuple[Any, Any]:
    low, _, high = text.partition(":")
    try:
        return kind(low), kind(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN[:MAX], got {text!r}") from None


def _model_quota(text: str) -> tuple[str, ModelQuota]:
    model, _, values = text.partition("=")
    parts = values.split(",")
    if not model or not values or len(parts) > 3:
        raise argparse.ArgumentTypeError(f"expected MODEL=RPM,TPM,RPD, got {text!r}")
    try:
        numbers = [int(part) if part.strip() else 0 for part in parts] + [0] * (3 - len(parts))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers in MODEL=RPM,TPM,RPD, got {text!r}") from None
    return model.strip().removeprefix("models/"), ModelQuota(*numbers)


def build_parser() -> argparse.ArgumentParser:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog="flex-emulator",
        description="A local Gemini-API-compatible emulator of the flex tier: capacity, queue, shedding, "
        "rate limits and injectable faults. Point google-genai at the URL it prints.",
    )
    parser.add_argument("--host", default=defaults.host, help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=defaults.port, help="port to bind; 0 picks a free one (default %(default)s)"
    )
    parser.add_argument("--slots", type=int, default=defaults.slots, help="calls served at once (default %(default)s)")
    parser.add_argument(
        "--service-time",
        type=lambda t: _range(t, float),
        default=defaults.service_time,
        metavar="MIN[:MAX]",
        help="seconds each call holds a slot, uniform in [MIN, MAX] (default 0)",
    )
    parser.add_argument(
        "--queue-wait",
        type=lambda t: _range(t, float),
        default=defaults.queue_wait,
        metavar="MIN[:MAX]",
        help="seconds a flex call waits in the flex queue before it is served, holding no slot (default 0)",
    )
    parser.add_argument(
        "--queue-depth",
        type=int,
        default=defaults.queue_depth,
        help="flex calls that may wait; more get 503 (default %(default)s)",
    )
    parser.add_argument(
        "--preempt-rate",
        type=float,
        default=defaults.preempt_rate,
        help="fraction of flex calls evicted with 503 when their turn comes (default %(default)s)",
    )
    parser.add_argument(
        "--implicit-cache-rate",
        type=float,
        default=defaults.implicit_cache_rate,
        help="chance a prompt sharing the model's minimum of leading tokens (1,024; Pro 4,096) with a recent one "
        "is served partly from the implicit cache (default %(default)s; 0: off)",
    )
    parser.add_argument(
        "--batch-lines-may-name-caches",
        action="store_true",
        help="let a batch job's lines name an explicit cache (cachedContent); refused by default, as users "
        "report of the real Batch API (python-genai #509, #1313)",
    )
    parser.add_argument(
        "--rps",
        type=float,
        default=defaults.rps,
        help="requests per second per API key over all models, for burst tests (the real API has no such "
        "limit); 0 = unlimited",
    )
    parser.add_argument(
        "--rpm", type=int, default=defaults.rpm, help="requests per minute per API key and model; 0 = unlimited"
    )
    parser.add_argument(
        "--tpm", type=int, default=defaults.tpm, help="input tokens per minute per API key and model; 0 = unlimited"
    )
    parser.add_argument(
        "--rpd",
        type=int,
        default=defaults.rpd,
        help="requests per day per API key and model, reset at midnight America/Los_Angeles; 0 = unlimited",
    )
    parser.add_argument(
        "--quota",
        action="append",
        type=_model_quota,
        default=[],
        metavar="MODEL=RPM,TPM,RPD",
        help="one model's own quotas (repeatable); an empty or 0 value is unlimited, e.g. gemini-2.5-pro=150,,1000",
    )
    parser.add_argument(
        "--quota-window",
        choices=list(QUOTA_WINDOWS),
        default=defaults.quota_window,
        help="minute windows fixed at the minute boundary, or sliding (default %(default)s)",
    )
    parser.add_argument(
        "--quota-details",
        choices=list(QUOTA_DETAILS),
        default=defaults.quota_details,
        help="what a quota 429 carries: full (QuotaFailure, Help, RetryInfo), retry-only, or none (as some 429s "
        "in the wild: no details at all) (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for service times and preemption")
    parser.add_argument("--api-key", default=None, help="the only API key accepted (default: any non-empty key)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="ID",
        help=f"serve another model id as well (repeatable); always served: {', '.join(FLEX_MODELS)}",
    )
    parser.add_argument(
        "--input-token-limit",
        type=int,
        default=defaults.input_token_limit,
        help="prompt tokens above which a call gets 400 (default %(default)s)",
    )
    parser.add_argument(
        "--answer-tokens",
        type=lambda t: _range(t, int),
        default=defaults.answer_tokens,
        metavar="MIN[:MAX]",
        help="length of plain-text answers in tokens (default 24:96)",
    )
    parser.add_argument(
        "--token-lifetime",
        type=float,
        default=defaults.token_lifetime_s,
        help="seconds a Vertex AI access token from POST /token stays valid (default %(default)s)",
    )
    batch = defaults.batch
    parser.add_argument(
        "--batch-turnaround",
        type=float,
        default=batch.turnaround_s,
        help="seconds from a batch job's creation to its end (the real target is 24 hours; default %(default)s)",
    )
    parser.add_argument(
        "--batch-error-rate",
        type=float,
        default=batch.error_rate,
        help="share of a batch job's lines answered with an error (default %(default)s)",
    )
    parser.add_argument("--batch-shuffle", action="store_true", help="batch results come back out of order")
    parser.add_argument(
        "--batch-stuck",
        action="store_true",
        help="every batch job stays PENDING, then RUNNING, until cancelled (a stalled Batch API, as users report)",
    )
    parser.add_argument(
        "--batch-drop-metadata", action="store_true", help="inline batch results come back without their metadata"
    )
    parser.add_argument(
        "--batch-enqueued-tokens",
        type=int,
        default=batch.enqueued_tokens,
        help="prompt tokens a project's pending and running batch jobs may hold per model; 0 = unlimited",
    )
    parser.add_argument(
        "--batch-model",
        action="append",
        default=None,
        metavar="ID",
        help="a model that takes batch jobs (repeatable); default: every model served",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.epilog = (
        f"Admin endpoints under {ADMIN_PREFIX}/: GET stats, GET calls, GET|POST|DELETE faults, POST reset, "
        "POST quota/end-day, GET oauth/tokens, POST oauth/expire, GET health, GET|POST batches, "
        "POST batches/{id}/end. Batch API under /{v1,v1beta}/batches. Vertex AI routes under "
        "/{v1,v1beta1}/projects/{project}/locations/{location}/publishers/google/models/, OAuth at POST /token. "
        f"Fault kinds: {', '.join(FAULT_KINDS)}."
    )
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        slots=args.slots,
        service_time=args.service_time,
        queue_wait=args.queue_wait,
        queue_depth=args.queue_depth,
        preempt_rate=args.preempt_rate,
        implicit_cache_rate=args.implicit_cache_rate,
        batch_lines_may_name_caches=args.batch_lines_may_name_caches,
        rps=args.rps,
        rpm=args.rpm,
        tpm=args.tpm,
        rpd=args.rpd,
        quotas=tuple(args.quota),
        quota_window=args.quota_window,
        quota_details=args.quota_details,
        token_lifetime_s=args.token_lifetime,
        seed=args.seed,
        api_key=args.api_key,
        models=tuple(dict.fromkeys([*FLEX_MODELS, *args.model])),
        input_token_limit=args.input_token_limit,
        answer_tokens=args.answer_tokens,
        batch=BatchSettings(
            turnaround_s=args.batch_turnaround,
            error_rate=args.batch_error_rate,
            shuffle=args.batch_shuffle,
            drop_metadata=args.batch_drop_metadata,
            stuck=args.batch_stuck,
            enqueued_tokens=args.batch_enqueued_tokens,
        ),
        batch_models=tuple(m.removeprefix("models/") for m in args.batch_model) if args.batch_model else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        sock = bind_socket(config.host, config.port)
    except OSError as exc:
        print(f"flex-emulator: cannot bind {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    print(f"flex-emulator listening on http://{_url_host(host)}:{port}", flush=True)
    server = uvicorn.Server(_uvicorn_config(config, args.log_level))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
