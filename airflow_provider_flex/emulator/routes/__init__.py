"""The emulator's routes, one module per API (Gemini, Vertex AI, Files, admin); batch jobs in ``emulator.batch``."""
