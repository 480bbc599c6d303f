"""GeminiFlexHook: the one place that talks to google-genai and makes a flex call safe.

The SDK makes one attempt with no timeout, ignores ``RetryInfo`` and ends a cut
stream quietly. This hook adds what flex needs: a per-attempt timeout (also sent
as ``X-Server-Timeout``), one tenacity retry layer that honours the server's
delay and a total deadline, pacing to the project's quotas, the tier that
actually served the call, usage and cost. This module is the I/O; the decisions
live beside it (``retry``, ``quota``, ``call``, ``results``, ``connection``) and
are shared by the sync and async paths.

``google.genai`` is imported lazily so DAG files that import this module parse fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_flex import DEFAULT_CONN_ID
from airflow_provider_flex.arguments import QuotaLimits, normalize_tier
from airflow_provider_flex.compat import BaseHook, read_connection_async, run_blocking
from airflow_provider_flex.exceptions import FlexError
from airflow_provider_flex.hooks.batch import FlexBatches
from airflow_provider_flex.hooks.caches import FlexCaches
from airflow_provider_flex.hooks.call import CallPacer, FlexCall
from airflow_provider_flex.hooks.clients import sdk_is_warm, shared_client, warm_sdk
from airflow_provider_flex.hooks.connection import ConnectionSettings, mask, redact
from airflow_provider_flex.hooks.media_uploads import MediaUploads
from airflow_provider_flex.hooks.pacing import wait_for_loop_pass
from airflow_provider_flex.hooks.quota import QuotaLimiter, quota_limiter
from airflow_provider_flex.hooks.request import REQUEST_CONFIGS, FlexRequest, check_cached_content
from airflow_provider_flex.hooks.results import FlexAsyncStream, FlexResponse, FlexStream, StreamAssembly
from airflow_provider_flex.hooks.retry import FlexRetryPolicy, single_call_error
from airflow_provider_flex.hooks.vertex import check_vertex_request
from airflow_provider_flex.pricing import TokenPrice

if TYPE_CHECKING:
    from google import genai


class GeminiFlexHook(MediaUploads, BaseHook):
    """Calls the Gemini API on the flex tier with timeouts, retries, served tier, usage and cost.

    :param gemini_flex_conn_id: connection with the API key as password and an optional
        base URL as host (an emulator, a proxy).
    :param retry_policy: overrides the connection's retry extras and the defaults.
    :param timeout: seconds per attempt; overrides the connection's ``timeout`` extra.
    :param prices: price table overriding :data:`~airflow_provider_flex.pricing.DEFAULT_PRICES`.
    :param quotas: quotas known for every model this hook calls (a :class:`QuotaLimits` or
        its dict), overriding the connection's ``quotas`` extra.
    :param pacer: a bulk caller's :class:`CallPacer` (the enrichment engine's); default none.
    :param rate_limit_redis_conn_id: a ``redis`` connection through which all processes pace to
        the same quotas; overrides the connection's extra of the same name.

    Every call reserves its start with the process's one :class:`QuotaLimiter` for
    (connection, model), so operators, triggers and enrichment pace to the same quotas.
    """

    conn_name_attr = "gemini_flex_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "gemini_flex"
    hook_name = "Gemini Flex"

    def __init__(
        self,
        gemini_flex_conn_id: str = default_conn_name,
        *,
        retry_policy: FlexRetryPolicy | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        prices: Mapping[str, Mapping[str, TokenPrice]] | None = None,
        quotas: QuotaLimits | Mapping[str, Any] | None = None,
        pacer: CallPacer | None = None,
        rate_limit_redis_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gemini_flex_conn_id = gemini_flex_conn_id
        self._explicit_policy = FlexRetryPolicy.from_value(retry_policy)
        self._explicit_timeout = timeout
        self.prices = prices
        self._settings: ConnectionSettings | None = None
        self._explicit_quotas = QuotaLimits.from_value(quotas, source="quotas")
        self.pacer = pacer or CallPacer()
        self._explicit_redis_conn_id = rate_limit_redis_conn_id
        self._limiters: dict[str, QuotaLimiter] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gemini_flex_conn_id={self.gemini_flex_conn_id!r})"

    # ---- connection

    def _load_settings(self, conn: Any) -> ConnectionSettings:
        settings = ConnectionSettings.from_connection(
            conn, explicit_policy=self._explicit_policy, explicit_timeout=self._explicit_timeout
        )
        if settings.api_key and settings.api_key != conn.password:  # Airflow masks a connection's own password
            mask(settings.api_key)
        if settings.vertex is not None and settings.vertex.key_json:
            mask(settings.vertex.key_json)  # a JSON string in an extra is not one Airflow knows to mask
            mask(settings.vertex.private_key or "")
        return settings

    @property
    def settings(self) -> ConnectionSettings:
        if self._settings is None:
            self._settings = self._load_settings(self.get_connection(self.gemini_flex_conn_id))
        return self._settings

    async def aload_settings(self) -> ConnectionSettings:
        """Read the connection without blocking the event loop (for triggers)."""
        if self._settings is None:
            self._settings = await read_connection_async(self, self.gemini_flex_conn_id, self._load_settings)
        return self._settings

    async def aprepare(self) -> None:
        """Read the connection and do google-genai's one-time work in a thread, off the event loop.

        The first client and first call cost ~0.2 s of imports, SSL contexts and pydantic
        schema building; on a triggerer's shared loop that would stall every other trigger.
        It is done once per process: every hook of the same key and endpoint shares the client.
        """
        settings = await self.aload_settings()
        if not sdk_is_warm(settings):
            await asyncio.to_thread(warm_sdk, settings)

    @property
    def retry_policy(self) -> FlexRetryPolicy:
        return self.settings.retry_policy

    @cached_property
    def client(self) -> genai.Client:
        """Return the process's google-genai client for this connection's key and endpoint (sync and ``.aio``).

        Shared by every hook and trigger of the same key, base URL and API version in the
        process (see :mod:`~airflow_provider_flex.hooks.clients`); do not close it.
        """
        return shared_client(self.settings)

    @property
    def price_table(self) -> Mapping[str, Mapping[str, TokenPrice]]:
        """Return the prices this hook's calls are costed at: its own table, else the endpoint's defaults with the
        team's ``[gemini_flex] prices_file`` merged over them (:mod:`~airflow_provider_flex.price_file`)."""
        if self.prices is not None:
            return self.prices
        return self._default_prices

    @cached_property
    def _default_prices(self) -> Mapping[str, Mapping[str, TokenPrice]]:
        """Return the endpoint's prices with ``[gemini_flex] prices_file`` merged: read once per hook, not per call."""
        from airflow_provider_flex.price_file import price_table

        return price_table(vertex=self.settings.vertex is not None)

    def get_conn(self) -> genai.Client:
        return self.client

    @cached_property
    def batches(self) -> FlexBatches:
        """Return the Gemini Batch API (same 50% price as flex, its own quota, answers within 24 hours):
        submit, follow, cancel and delete jobs, and read their results by key. Gemini API only."""
        if self.settings.vertex is not None:
            raise FlexError(
                f"connection {self.gemini_flex_conn_id!r} is in Vertex AI mode: its batch prediction jobs read "
                "from Cloud Storage or BigQuery, which this provider does not drive; use the Gemini API for batch"
            )
        return FlexBatches(lambda: self.client, self.price_table)

    @cached_property
    def caches(self) -> FlexCaches:
        """Return the API's explicit context caches (create, get, list, update the TTL, delete, storage cost).
        Gemini API only."""
        if self.settings.vertex is not None:
            raise FlexError(
                f"connection {self.gemini_flex_conn_id!r} is in Vertex AI mode: this provider manages context "
                "caches on the Gemini API only"
            )
        return FlexCaches(lambda: self.client, self.price_table, self.settings.retry_policy)

    # ---- generate and stream: each takes a FlexRequest, or its fields as keywords

    def generate_content(self, request: FlexRequest | None = None, **arguments: Any) -> FlexResponse:
        """Return one flex call's answer, with retries; raise FlexCapacityError, FlexRequestError or FlexResponseError.

        ``request`` is a :class:`~airflow_provider_flex.hooks.request.FlexRequest`, or give its fields as
        keywords: ``contents``, ``model`` (default: the connection's), ``config`` (a dict or a
        ``GenerateContentConfig``), ``service_tier`` (default ``flex``) and ``media`` (files added to the
        prompt, inline or through the Files API; uploads made here are deleted after the call).
        """
        request = FlexRequest.of_call(request, arguments)
        with self._prompt_with_media(request.contents, request.media) as prompt:
            call = self._prepare(request, prompt)
            for tier, attempt in call.each_attempt():
                with attempt:
                    try:
                        time.sleep(call.reserve(prompt))
                        raw = self.client.models.generate_content(
                            model=call.model, contents=prompt, config=call.config_for(tier)
                        )
                    except Exception as exc:
                        raise call.attempt_failed(exc) from exc
                    return call.finish(raw, tier)
        raise AssertionError("each_attempt() ends by raising")  # pragma: no cover

    async def agenerate_content(self, request: FlexRequest | None = None, **arguments: Any) -> FlexResponse:
        """Return :meth:`generate_content`'s answer without blocking the event loop (triggers, the enrichment
        engine); media files are read and uploaded in a thread."""
        request = FlexRequest.of_call(request, arguments)
        await self.aprepare()
        await self._alimiter(request.model)
        async with self._aprompt_with_media(request.contents, request.media) as prompt:
            call = self._prepare(request, prompt)
            async for tier, attempt in call.aeach_attempt():
                with attempt:
                    try:
                        async with self._started(call, prompt):
                            raw = await self.client.aio.models.generate_content(
                                model=call.model, contents=prompt, config=call.config_for(tier)
                            )
                    except Exception as exc:
                        raise call.attempt_failed(exc) from exc
                    return call.finish(raw, tier)
        raise AssertionError("aeach_attempt() ends by raising")  # pragma: no cover

    def stream_content(self, request: FlexRequest | None = None, **arguments: Any) -> FlexStream:
        """Return a stream of the answer's text as it arrives; ``.result`` holds the FlexResponse once it ends.

        Takes what :meth:`generate_content` takes. A failure before any text arrived is retried; after that
        it raises FlexStreamInterrupted, so partial text is never passed off as an answer. Media files are
        uploaded when the stream is first read (a stream never read uploads nothing).
        """
        return FlexStream(self._stream(FlexRequest.of_call(request, arguments)))

    def _stream(self, request: FlexRequest) -> Iterator[str | FlexResponse]:
        with self._prompt_with_media(request.contents, request.media) as prompt:
            call = self._prepare(request, prompt)
            for tier, attempt in call.each_attempt():
                with attempt:
                    assembly = StreamAssembly(call.requested_tier)
                    try:
                        time.sleep(call.reserve(prompt))
                        chunks = self.client.models.generate_content_stream(
                            model=call.model, contents=prompt, config=call.config_for(tier)
                        )
                        for chunk in chunks:
                            if piece := assembly.add(chunk):
                                yield piece
                        assembly.ensure_complete()
                    except Exception as exc:
                        raise call.attempt_failed(exc, assembly) from exc
                    yield call.finish_stream(assembly, tier)
                    return

    def astream_content(self, request: FlexRequest | None = None, **arguments: Any) -> FlexAsyncStream:
        """Return :meth:`stream_content`'s stream for ``async for`` (an async task, a trigger of your own)."""
        return FlexAsyncStream(self._astream(FlexRequest.of_call(request, arguments)))

    async def _astream(self, request: FlexRequest) -> AsyncIterator[str | FlexResponse]:
        await self.aprepare()
        await self._alimiter(request.model)
        async with self._aprompt_with_media(request.contents, request.media) as prompt:
            call = self._prepare(request, prompt)
            async for tier, attempt in call.aeach_attempt():
                with attempt:
                    assembly = StreamAssembly(call.requested_tier)
                    try:
                        async with self._started(call, prompt):
                            chunks = await self.client.aio.models.generate_content_stream(
                                model=call.model, contents=prompt, config=call.config_for(tier)
                            )
                            async for chunk in chunks:
                                if piece := assembly.add(chunk):
                                    yield piece
                        assembly.ensure_complete()
                    except Exception as exc:
                        raise call.attempt_failed(exc, assembly) from exc
                    yield call.finish_stream(assembly, tier)
                    return

    @contextlib.asynccontextmanager
    async def _started(self, call: FlexCall, contents: Any) -> AsyncIterator[None]:
        """Hold an async attempt's start: a slot of the caller's pacer, its turn in the quotas, its turn on the loop."""
        async with self.pacer.attempt():
            if call.limiter.shared is not None:  # a Redis round trip (or a stalled Redis's timeout): off the loop
                wait = await asyncio.to_thread(call.reserve, contents)
            else:
                wait = call.reserve(contents)
            if wait:
                await asyncio.sleep(wait)
            await wait_for_loop_pass()
            self.pacer.request_sent()
            yield

    # ---- misc

    def count_tokens(self, *, contents: Any, model: str | None = None) -> int:
        """Return prompt tokens as the API counts them (no retries: it is a cheap, standard call)."""
        try:
            result = self.client.models.count_tokens(model=model or self.settings.default_model, contents=contents)
        except Exception as exc:
            raise single_call_error(exc) from exc
        return result.total_tokens or 0

    def test_connection(self) -> tuple[bool, str]:
        """Check the key and base URL with a cheap model lookup."""
        try:
            model = self.settings.default_model
            self.client.models.get(model=model)
        except Exception as exc:
            return False, redact(str(single_call_error(exc)), self._settings)
        return True, f"Connection works: model {model} is available."

    def close(self) -> None:
        """Let go of the client (it is shared with the process's other hooks, so it stays open)."""
        self.__dict__.pop("client", None)

    def quota_limiter(self, model: str | None = None) -> QuotaLimiter:
        """Return this process's limiter for (this connection, ``model``), configured by this hook's first use of it.

        The connection's and this hook's quotas apply when the hook first takes the limiter, not again on
        every call. With a ``rate_limit_redis_conn_id`` it paces through Redis, with every process of the project.
        """
        settings = self.settings
        model = (model or settings.default_model).removeprefix("models/")
        limiter = self._limiters.get(model)
        if limiter is not None:
            return limiter
        project = settings.project
        limiter = quota_limiter(
            self.gemini_flex_conn_id, project, model, settings.quotas_for(model).merged(self._explicit_quotas)
        )
        redis_conn_id = self._explicit_redis_conn_id or settings.rate_limit_redis_conn_id
        if redis_conn_id and limiter.shared is None:
            from airflow_provider_flex.hooks.shared_quota import shared_quota_link

            limiter.share_with(shared_quota_link(redis_conn_id, project, model))
        self._limiters[model] = limiter
        return limiter

    async def _alimiter(self, model: str | None) -> None:
        """Take the model's limiter in a thread the first time: with a shared quota that reads the Redis
        connection and builds its client, which must not hold the event loop."""
        if (model or self.settings.default_model).removeprefix("models/") not in self._limiters:
            await run_blocking(self.quota_limiter, model)

    def forget_spent_day(self, model: str | None = None) -> None:
        """Let calls to ``model`` try again after a per-day 429 (a new run looks at the day's quota afresh)."""
        self.quota_limiter(model).clear_day_block()

    def _prepare(self, request: FlexRequest, contents: Any) -> FlexCall:
        """Return the decisions of one call of ``request`` (``contents``: its prompt with any media)."""
        settings = self.settings
        model = request.model or settings.default_model
        tier = normalize_tier(request.service_tier)
        check_cached_content("flex call", request.cached_content, request.system_instruction, request.generation_config)
        if settings.vertex is not None:
            check_vertex_request(settings.vertex, tier, contents, f"connection {self.gemini_flex_conn_id!r}")
        return FlexCall(
            model=model,
            base_config=request.config(),
            requested_tier=tier,
            policy=settings.retry_policy,
            timeout_s=settings.timeout,
            prices=self.price_table,
            vertex_flex_mode=settings.vertex.flex_mode if settings.vertex else None,
            limiter=self.quota_limiter(model),
            pacer=self.pacer,
            log=self.log,
            configs=REQUEST_CONFIGS,
        )
