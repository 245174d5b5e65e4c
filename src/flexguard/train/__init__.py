"""Training: the embedded scorer's heads (``encoder``) and the FlexGuard LLM pipeline."""
