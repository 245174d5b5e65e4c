"""Training: the embedded models (:mod:`.embedded`) and the FlexGuard LLM pipeline (:mod:`.llm`)."""
