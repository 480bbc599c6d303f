"""Settings of one emulator instance (the ``flex-emulator`` flags, as data)."""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_provider_flex.emulator.batch import BatchSettings
from airflow_provider_flex.emulator.quotas import QUOTA_WINDOWS, ModelQuota
from airflow_provider_flex.pricing import FLEX_MODELS, IMAGE_MODELS

DEFAULT_INPUT_TOKEN_LIMIT = 1_048_576
#: What a quota 429 may carry (see ``answers.quota_error``).
QUOTA_DETAILS = ("full", "retry-only", "none")
DEFAULT_OUTPUT_TOKEN_LIMIT = 65_536
#: The server-side patience for a queued call when the client sends no X-Server-Timeout.
DEFAULT_SERVER_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated flex tier behaves.

    ``service_time`` is ``(min, max)`` seconds a call holds a slot. ``rpm``, ``tpm``
    (input tokens) and ``rpd`` are each model's quotas per API key (the project),
    0 = unlimited; ``quotas`` overrides them for named models; ``quota_window`` is
    ``fixed`` (minute boundaries) or ``sliding``. ``rps`` is a per-API-key burst
    limit over all models. ``api_key`` None accepts any non-empty key.
    """

    host: str = "127.0.0.1"
    port: int = 0
    slots: int = 8
    service_time: tuple[float, float] = (0.0, 0.0)
    #: Seconds a flex call waits in the flex queue before it is served, uniform in (MIN, MAX), holding no
    #: slot (the real tier: "1 to 15 minutes"); past the call's X-Server-Timeout it ends with 504.
    queue_wait: tuple[float, float] = (0.0, 0.0)
    queue_depth: int = 64
    preempt_rate: float = 0.0
    #: The chance a prompt sharing the model's minimum of leading tokens with a recent one gets an implicit
    #: cache hit (``cachedContentTokenCount``); the API promises none, so 0 turns the cache off.
    implicit_cache_rate: float = 1.0
    #: Whether a batch job's line may name an explicit cache (``cachedContent``). Refused by default: users
    #: report they cannot (python-genai #509, #1313), and Vertex AI says the two discounts do not stack.
    batch_lines_may_name_caches: bool = False
    #: Models whose ``cachedContents.create`` is refused (the image models: caching is not listed for them).
    models_without_caching: tuple[str, ...] = IMAGE_MODELS
    rps: float = 0.0
    rpm: int = 0
    tpm: int = 0
    rpd: int = 0
    quotas: tuple[tuple[str, ModelQuota], ...] = ()
    quota_window: str = "fixed"
    #: What a quota 429 carries: ``full`` (QuotaFailure, Help, RetryInfo), ``retry-only`` or ``none``.
    quota_details: str = "full"
    #: Seconds a Vertex AI access token from ``POST /token`` stays valid.
    token_lifetime_s: float = 3600.0
    seed: int | None = None
    api_key: str | None = None
    models: tuple[str, ...] = FLEX_MODELS
    input_token_limit: int = DEFAULT_INPUT_TOKEN_LIMIT
    answer_tokens: tuple[int, int] = (24, 96)
    stream_chunk_tokens: int = 8
    call_log_size: int = 200_000
    #: How Batch API jobs behave: turnaround, failed lines, order, metadata, enqueued-token quota.
    batch: BatchSettings = field(default_factory=BatchSettings)
    #: Models that take batch jobs (``batchGenerateContent``); None = every model served.
    batch_models: tuple[str, ...] | None = None

    @property
    def batch_model_ids(self) -> tuple[str, ...]:
        return self.models if self.batch_models is None else self.batch_models

    def __post_init__(self) -> None:
        problems = []
        if self.slots < 1:
            problems.append(f"slots must be at least 1, got {self.slots}")
        low, high = self.service_time
        if low < 0 or high < low:
            problems.append(f"service time must be MIN[:MAX] with 0 <= MIN <= MAX, got {low}:{high}")
        if self.queue_wait[0] < 0 or self.queue_wait[1] < self.queue_wait[0]:
            problems.append(f"queue wait must be MIN[:MAX] with 0 <= MIN <= MAX, got {self.queue_wait}")
        if self.queue_depth < 0:
            problems.append(f"queue depth must be >= 0, got {self.queue_depth}")
        if not 0.0 <= self.preempt_rate <= 1.0:
            problems.append(f"preempt rate must be between 0 and 1, got {self.preempt_rate}")
        if not 0.0 <= self.implicit_cache_rate <= 1.0:
            problems.append(f"implicit cache rate must be between 0 and 1, got {self.implicit_cache_rate}")
        if min(self.rps, self.rpm, self.tpm, self.rpd) < 0:
            problems.append("rps, rpm, tpm and rpd must be >= 0 (0 = unlimited)")
        for model, quota in self.quotas:
            if min(quota.rpm, quota.tpm, quota.rpd) < 0:
                problems.append(f"quota for {model}: values must be >= 0 (0 = unlimited)")
        if self.quota_details not in QUOTA_DETAILS:
            problems.append(f"quota details must be one of {', '.join(QUOTA_DETAILS)}, got {self.quota_details!r}")
        if self.quota_window not in QUOTA_WINDOWS:
            problems.append(f"quota window must be one of {', '.join(QUOTA_WINDOWS)}, got {self.quota_window!r}")
        if self.answer_tokens[0] < 1 or self.answer_tokens[1] < self.answer_tokens[0]:
            problems.append(f"answer tokens must be MIN[:MAX] with 1 <= MIN <= MAX, got {self.answer_tokens}")
        if self.stream_chunk_tokens < 1:
            problems.append("stream chunk tokens must be at least 1")
        if self.batch.turnaround_s < 0 or not 0.0 <= self.batch.error_rate <= 1.0:
            problems.append("batch turnaround must be >= 0 and the batch error rate between 0 and 1")
        if self.batch.enqueued_tokens < 0:
            problems.append("batch enqueued tokens must be >= 0 (0 = unlimited)")
        if not self.models:
            problems.append("at least one model is required")
        if problems:
            raise ValueError("; ".join(problems))

    def model_quotas(self) -> tuple[ModelQuota, dict[str, ModelQuota]]:
        """Return the quota every model has, and the models with their own."""
        return ModelQuota(self.rpm, self.tpm, self.rpd), dict(self.quotas)
