"""A local Gemini-API-compatible emulator of the flex tier.

It models what makes flex different (serving slots, a bounded flex queue behind
standard traffic, shedding, preemption, per-key rate limits, server timeouts)
and lets tests queue faults. The real google-genai SDK talks to it over HTTP.
"""

from airflow_provider_flex.emulator.admin import EmulatorAdmin
from airflow_provider_flex.emulator.app import create_app
from airflow_provider_flex.emulator.config import EmulatorConfig
from airflow_provider_flex.emulator.server import FlexEmulator, main

__all__ = ["EmulatorAdmin", "EmulatorConfig", "FlexEmulator", "create_app", "main"]
