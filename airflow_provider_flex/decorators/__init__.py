"""TaskFlow decorators (``@task.gemini_flex``), registered through the provider info."""
