"""`make demo`: one flex call through the real google-genai SDK against the embedded emulator."""

from __future__ import annotations

from google import genai
from google.genai import types

from airflow_provider_flex.emulator import FlexEmulator


def main() -> None:
    with FlexEmulator(slots=4, service_time=(0.2, 0.6), queue_depth=16, seed=7) as emulator:
        print(f"flex emulator at {emulator.base_url}")
        client = genai.Client(api_key="demo-key", http_options=types.HttpOptions(base_url=emulator.base_url))
        response = client.models.generate_content(
            model="gemini-2.5-flash",
            contents="Summarise why a nightly enrichment job suits the flex tier.",
            config=types.GenerateContentConfig(service_tier="flex", http_options=types.HttpOptions(timeout=900_000)),
        )
        usage = response.usage_metadata
        print(f"answer: {response.text}")
        print(f"served tier: {response.sdk_http_response.headers.get('x-gemini-service-tier')}")
        print(
            f"usage: prompt={usage.prompt_token_count} output={usage.candidates_token_count} "
            f"thoughts={usage.thoughts_token_count or 0} total={usage.total_token_count}"
        )


if __name__ == "__main__":
    main()
