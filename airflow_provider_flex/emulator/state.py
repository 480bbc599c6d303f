"""One emulator instance's state: capacity, quotas, faults, files, batch jobs, tokens and the counters."""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from airflow_provider_flex.emulator import model as lm
from airflow_provider_flex.emulator.answers import Answer, compose_answer, response_body
from airflow_provider_flex.emulator.batch import BatchJobs
from airflow_provider_flex.emulator.cache import ImplicitCache
from airflow_provider_flex.emulator.cached_contents import CachedContents, CachedEntry, cache_name, with_cache
from airflow_provider_flex.emulator.capacity import Capacity
from airflow_provider_flex.emulator.config import EmulatorConfig
from airflow_provider_flex.emulator.errors import ApiError
from airflow_provider_flex.emulator.faults import FaultQueue
from airflow_provider_flex.emulator.files import FileStore
from airflow_provider_flex.emulator.media import decode_inline, media_tokens
from airflow_provider_flex.emulator.quotas import QuotaBook
from airflow_provider_flex.emulator.requests import GenerateRequest, parse_generate_request
from airflow_provider_flex.emulator.vertex import TokenIssuer


class Stats:
    """Counters the admin endpoint reports."""

    def __init__(self, log_size: int) -> None:
        self.calls: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.tokens: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.call_log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self.sequence = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.api_requests = 0

    def record(
        self,
        *,
        model: str,
        tier: str,
        method: str,
        outcome: str,
        prompt: str,
        prompt_tokens: int,
        answer: Answer | None,
        parts: list[dict[str, Any]] | None = None,
    ) -> None:
        self.calls[tier][outcome] += 1
        if answer is not None:
            usage = self.tokens[tier]
            usage["prompt"] += prompt_tokens
            usage["output"] += answer.output_tokens
            usage["thoughts"] += answer.thoughts_tokens
            usage["cached"] += answer.cached_tokens
        self.sequence += 1
        self.call_log.append(
            {
                "seq": self.sequence,
                "time": time.time(),
                "model": model,
                "tier": tier,
                "method": method,
                "outcome": outcome,
                "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(),
                "prompt": prompt[:200],
                "prompt_tokens": prompt_tokens,
                "parts": parts or [],
                "images_out": len(answer.images) if answer is not None else 0,
            }
        )

    @asynccontextmanager
    async def tracking_in_flight(self) -> AsyncIterator[None]:
        self.api_requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1


def media_part_tokens(files: FileStore, part: Mapping[str, Any]) -> int:
    """Return prompt tokens of a media part: an inline image by its size, an uploaded file by its content."""
    inline = decode_inline(dict(part))
    if inline is not None:
        return media_tokens(*inline)
    file_data = part.get("fileData") or part.get("file_data")
    if isinstance(file_data, Mapping):
        uri = str(file_data.get("fileUri") or file_data.get("file_uri") or "")
        stored = files.by_uri(uri)
        if stored is None or not stored.complete:
            raise ApiError(
                403,
                "PERMISSION_DENIED",
                f"You do not have permission to access the File {uri.rsplit('/', 1)[-1]} or it may not exist.",
            )
        return media_tokens(stored.mime_type, bytes(stored.data))
    return lm.NON_TEXT_PART_TOKENS


class EmulatorState:
    """Everything one emulator instance knows; lives on the server's event loop."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.faults = FaultQueue()
        self.tokens = TokenIssuer(config.token_lifetime_s)  # kept across resets: clients hold their tokens
        self.files = FileStore()  # kept across resets too: uploaded files live until deleted
        self.reset()

    def part_tokens(self, part: Mapping[str, Any]) -> int:
        return media_part_tokens(self.files, part)

    def parse_request(self, body: Any, model: str, owner: str | None) -> tuple[GenerateRequest, CachedEntry | None]:
        """Return a generate body as the model reads it, with the cache it names (checked: 400, 403, 404) merged in.

        ``owner`` None: a batch line's, which any cache of the job's project may serve.
        """
        name = cache_name(body)
        if name is None:
            return parse_generate_request(body, self.part_tokens), None
        entry = self.cached_contents.for_request(owner, name, model, body)
        return parse_generate_request(with_cache(body, entry), self.part_tokens), entry

    def batch_request_tokens(self, body: Mapping[str, Any]) -> int:
        """Return prompt tokens of one request inside a batch job (ApiError if it is not a valid request).

        A line naming a cache is refused unless ``batch_lines_may_name_caches`` (python-genai #509, #1313:
        users cannot send cached content to a batch job).
        """
        if cache_name(body) is not None:
            if not self.config.batch_lines_may_name_caches:
                raise ApiError(
                    400, "INVALID_ARGUMENT", "cachedContent is not supported in batch requests (python-genai #509)."
                )
            return parse_generate_request(body, self.part_tokens).prompt_tokens  # checked again when answered
        return parse_generate_request(body, self.part_tokens).prompt_tokens

    def batch_answer(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Return one batch line's GenerateContentResponse, as a generateContent call would answer it."""
        request, entry = self.parse_request(body, model, owner=None)
        answer = compose_answer(request, self.config, blocked=False, model=model)
        if entry is not None:
            answer = replace(answer, cached_tokens=entry.tokens)
        response = response_body(
            request,
            model,
            "standard",
            uuid.uuid4().hex[:22],
            text=answer.text,
            answer=answer,
            finish=answer.finish_reason,
        )
        response["usageMetadata"].pop("serviceTier", None)  # a batch line is not served on an online tier
        return response

    def reset(self) -> None:
        config = self.config
        self.rng = random.Random(config.seed)
        self.implicit_cache = ImplicitCache(config.implicit_cache_rate, config.seed)
        self.cached_contents = CachedContents(
            lambda contents, instruction: lm.prompt_tokens(contents, instruction, self.part_tokens),
            no_caching=frozenset(config.models_without_caching),
        )
        self.capacity = Capacity(config.slots, config.queue_depth)
        default, per_model = config.model_quotas()
        self.quotas = QuotaBook(default=default, per_model=per_model, window=config.quota_window, rps=config.rps)
        self.stats = Stats(config.call_log_size)
        self.faults.clear()
        self.batches = BatchJobs(
            config.batch,
            self.files,
            count_tokens=self.batch_request_tokens,
            answer=self.batch_answer,
            rng=random.Random(config.seed),
        )

    def snapshot(self) -> dict[str, Any]:
        capacity = self.capacity
        calls = {tier: dict(counter) for tier, counter in self.stats.calls.items()}
        return {
            "calls": calls,
            "calls_by_tier": {tier: sum(counter.values()) for tier, counter in calls.items()},
            "tokens": {tier: dict(counter) for tier, counter in self.stats.tokens.items()},
            "requests": self.stats.sequence,
            "api_requests": self.stats.api_requests,
            "in_flight": self.stats.in_flight,
            "peak_in_flight": self.stats.peak_in_flight,
            "in_service": capacity.in_service,
            "peak_in_service": capacity.peak_in_service,
            "queue_depth": {tier: capacity.queued(tier) for tier in capacity.queues},
            "peak_queue_depth": capacity.peak_queued,
            "pending_faults": len(self.faults.pending()),
            "quota_refusals": dict(self.quotas.refusals),
            "batch_jobs": len(self.batches.jobs),
            "cached_contents": self.cached_contents.snapshot(),
        }
