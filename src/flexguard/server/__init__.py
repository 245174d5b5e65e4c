"""HTTP server: OpenAI-compatible ``/v1/moderations`` plus a native ``/v1/moderate``."""
