"""`make demo`: a flex call through GeminiFlexHook (the real google-genai SDK) on the embedded emulator.

The emulator sheds the first attempt with 503, as congested flex capacity
does, so the demo also shows the hook's retry.
"""

from __future__ import annotations

import json
import os

from airflow_provider_flex.emulator import FlexEmulator
from airflow_provider_flex.hooks.gemini_flex import FlexRetryPolicy, GeminiFlexHook


def main() -> None:
    with FlexEmulator(slots=4, service_time=(0.2, 0.6), queue_depth=16, seed=7) as emulator:
        print(f"flex emulator at {emulator.base_url}")
        os.environ["AIRFLOW_CONN_GEMINI_FLEX_DEFAULT"] = json.dumps(
            {"conn_type": "gemini_flex", "host": emulator.base_url, "password": "demo-key"}
        )
        emulator.admin.inject("unavailable")
        hook = GeminiFlexHook(retry_policy=FlexRetryPolicy(initial_delay=0.5, deadline=120))
        response = hook.generate_content(
            contents="Summarise why a nightly enrichment job suits the flex tier.", model="gemini-2.5-flash"
        )
        usage = response.usage
        print()
        print(f"answer      : {response.text}")
        print(f"served tier : {response.service_tier} (requested {response.requested_tier})")
        print(
            f"usage       : prompt={usage.prompt_tokens} output={usage.output_tokens} "
            f"thoughts={usage.thoughts_tokens} total={usage.total_tokens}"
        )
        print(f"cost        : ${response.cost_usd:.6f} on flex")
        print(f"attempts    : {response.attempts} in {response.elapsed_s:.2f}s (the first was shed with 503)")


if __name__ == "__main__":
    main()
