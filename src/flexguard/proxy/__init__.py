"""``flexguard proxy``: a guardrail in front of any OpenAI-compatible LLM server.

``upstream.py`` talks to the upstream server (JSON and server-sent events, errors mapped to
OpenAI-shaped 502/504); ``guard.py`` holds the decisions (the user's turn before the call,
the answer after it or while it streams); ``app.py`` has the routes.
"""
