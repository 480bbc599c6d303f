"""What a flex call returns: usage, the served tier, the response, and streams that arrive whole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_provider_flex.arguments import normalize_tier
from airflow_provider_flex.exceptions import FlexResponseError
from airflow_provider_flex.hooks.retry import Failure, RetryableFailure
from airflow_provider_flex.hooks.schema import AnswerSchema

SERVICE_TIER_HEADER = "x-gemini-service-tier"


@dataclass(frozen=True)
class FlexUsage:
    """Tokens of one call. ``output_tokens`` excludes thinking and includes ``image_output_tokens``
    (the images an image model drew); thinking is billed as output, images at the image price."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    image_output_tokens: int = 0
    #: Prompt tokens that were audio (``promptTokensDetails``), and the cached ones among them
    #: (``cacheTokensDetails``): audio input has its own price.
    audio_prompt_tokens: int = 0
    audio_cached_tokens: int = 0
    #: ``toolUsePromptTokenCount``: tool results fed back to the model, billed as input.
    tool_use_prompt_tokens: int = 0

    @classmethod
    def from_metadata(cls, metadata: Any) -> FlexUsage:
        if metadata is None:
            return cls()
        prompt = metadata.prompt_token_count or 0
        output = metadata.candidates_token_count or 0
        thoughts = metadata.thoughts_token_count or 0
        images = tokens_of_modality(metadata.candidates_tokens_details, "IMAGE")
        return cls(
            prompt_tokens=prompt,
            output_tokens=output,
            thoughts_tokens=thoughts,
            cached_tokens=metadata.cached_content_token_count or 0,
            total_tokens=metadata.total_token_count or prompt + output + thoughts,
            image_output_tokens=images,
            audio_prompt_tokens=tokens_of_modality(metadata.prompt_tokens_details, "AUDIO"),
            audio_cached_tokens=tokens_of_modality(metadata.cache_tokens_details, "AUDIO"),
            tool_use_prompt_tokens=getattr(metadata, "tool_use_prompt_token_count", None) or 0,
        )

    @property
    def billed_output_tokens(self) -> int:
        """Return output tokens billed at the text output price (thinking included, images not)."""
        return self.output_tokens - self.image_output_tokens + self.thoughts_tokens


def tokens_of_modality(details: Any, modality: str) -> int:
    """Return the tokens a ``*TokensDetails`` list (``{modality, tokenCount}`` entries) counts for ``modality``."""
    return sum(
        detail.token_count or 0
        for detail in details or []
        if str(getattr(detail.modality, "value", detail.modality)) == modality
    )


@dataclass(frozen=True)
class FlexResponse:
    """The outcome of one logical call (all its attempts), JSON-safe through ``to_dict()``."""

    text: str | None
    model: str
    service_tier: str
    requested_tier: str
    finish_reason: str | None
    usage: FlexUsage
    cost_usd: float | None
    attempts: int
    elapsed_s: float
    parsed: Any = None
    #: What the same tokens cost at the standard tier's price (None when the table has no price).
    standard_cost_usd: float | None = None
    #: Images an image model drew, as bytes; ``to_dict()`` carries only their types and sizes (XCom stays small).
    images: tuple[GeneratedImage, ...] = ()
    #: Attempts of this call refused with 429 (quota) and 503 (flex capacity shed) before it was answered.
    rate_limited_429: int = 0
    unavailable_503: int = 0
    #: What the API's cache saved on this call: its cached tokens at the input price less at the cached price.
    cache_saved_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["parsed"] = json_safe(self.parsed)
        result["images"] = [{"mime_type": image.mime_type, "bytes": len(image.data)} for image in self.images]
        return result


@dataclass(frozen=True)
class GeneratedImage:
    mime_type: str
    data: bytes = field(repr=False)

    @property
    def extension(self) -> str:
        return {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}.get(self.mime_type, ".bin")


def images_of(response: Any) -> tuple[GeneratedImage, ...]:
    """Return the images in an answer's parts (inline data of an image type)."""
    candidates = getattr(response, "candidates", None) or []
    content = candidates[0].content if candidates else None
    images = []
    for part in getattr(content, "parts", None) or []:
        inline = getattr(part, "inline_data", None)
        if inline is not None and inline.data and str(inline.mime_type or "").startswith("image/"):
            images.append(GeneratedImage(str(inline.mime_type), inline.data))
    return tuple(images)


def json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "value") and hasattr(type(value), "__members__"):  # an Enum
        return value.value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def served_tier(headers: Mapping[str, str] | None, requested: str, traffic_type: Any = None) -> str:
    """Return the tier that served a call: Vertex AI's ``usageMetadata.trafficType``, else the Gemini API's
    ``x-gemini-service-tier`` header, else the one requested."""
    from airflow_provider_flex.hooks.vertex import served_by_traffic_type

    by_traffic = served_by_traffic_type(traffic_type)
    if by_traffic is not None:
        return by_traffic
    value = (headers or {}).get(SERVICE_TIER_HEADER)
    try:
        return normalize_tier(value) if value else requested
    except ValueError:
        return requested


def finish_reason_of(response: Any) -> str | None:
    candidates = response.candidates or []
    reason = candidates[0].finish_reason if candidates else None
    return getattr(reason, "value", reason)


def unusable_answer(response: Any, schema: AnswerSchema | None) -> tuple[Any, FlexResponseError | None]:
    """Return the answer's parsed JSON (None without a schema) and why it is unusable, if it is.

    Unusable: a blocked prompt, or an answer that fails ``schema`` (:class:`~.schema.AnswerSchema`).
    The error is returned, not raised, so the caller can price the answer first: it was paid for.
    """
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = getattr(feedback.block_reason, "value", feedback.block_reason)
        return None, FlexResponseError("blocked", f"the prompt was blocked (blockReason {reason})")
    if schema is None:
        return None, None
    try:
        return schema.parse(response.text, finish_reason_of(response)), None
    except FlexResponseError as problem:
        return None, problem


@dataclass
class StreamAssembly:
    """Collects one streamed answer and tells whether it arrived whole."""

    requested_tier: str
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage_metadata: Any = None
    tier: str | None = None
    model_version: str | None = None

    def add(self, chunk: Any) -> str:
        headers = getattr(chunk.sdk_http_response, "headers", None) if chunk.sdk_http_response else None
        traffic_type = getattr(chunk.usage_metadata, "traffic_type", None)
        if self.tier is None or traffic_type is not None:
            self.tier = served_tier(headers, self.requested_tier, traffic_type)
        self.usage_metadata = chunk.usage_metadata or self.usage_metadata
        self.model_version = chunk.model_version or self.model_version
        self.finish_reason = finish_reason_of(chunk) or self.finish_reason
        piece = chunk.text or ""
        self.text.append(piece)
        return piece

    def ensure_complete(self) -> None:
        if self.finish_reason is None:
            raise RetryableFailure(Failure(True, None, "STREAM_CUT", "the stream ended without a finishReason"))


class FlexStream(Iterator[str]):
    """The text of a streamed answer; ``result`` is the FlexResponse once the stream ended whole."""

    def __init__(self, source: Iterator[str | FlexResponse]) -> None:
        self._source = source
        self.result: FlexResponse | None = None

    def __iter__(self) -> FlexStream:
        return self

    def __next__(self) -> str:
        item = next(self._source)
        if isinstance(item, FlexResponse):
            self.result = item
            close = getattr(self._source, "close", None)
            if close is not None:
                close()  # the answer is whole: let the source clean up now (uploaded files), not at collection
            raise StopIteration
        return item


class FlexAsyncStream(AsyncIterator[str]):
    """Async twin of :class:`FlexStream`."""

    def __init__(self, source: AsyncIterator[str | FlexResponse]) -> None:
        self._source = source
        self.result: FlexResponse | None = None

    def __aiter__(self) -> FlexAsyncStream:
        return self

    async def __anext__(self) -> str:
        item = await anext(self._source)
        if isinstance(item, FlexResponse):
            self.result = item
            aclose = getattr(self._source, "aclose", None)
            if aclose is not None:
                await aclose()  # the answer is whole: let the source clean up now (uploaded files)
            raise StopAsyncIteration
        return item


def log_result(log: Any, result: Mapping[str, Any]) -> None:
    """Log the one summary line of a finished call, from its :meth:`FlexResponse.to_dict`."""
    usage = result.get("usage") or {}
    cost = result.get("cost_usd")
    log.info(
        "Flex result: model=%s tier=%s tokens in=%s out=%s thoughts=%s cost=%s attempts=%s elapsed=%ss",
        result.get("model"),
        result.get("service_tier"),
        usage.get("prompt_tokens"),
        usage.get("output_tokens"),
        usage.get("thoughts_tokens"),
        "n/a" if cost is None else f"${cost:.6f}",
        result.get("attempts"),
        result.get("elapsed_s"),
    )


def answer_text(response: Any) -> str | None:
    """Return the text parts of an answer that also carries images (``response.text`` warns on those)."""
    candidates = response.candidates or []
    parts = candidates[0].content.parts if candidates and candidates[0].content else []
    texts = [part.text for part in parts or [] if isinstance(part.text, str) and not part.thought]
    return "".join(texts) if texts else None
