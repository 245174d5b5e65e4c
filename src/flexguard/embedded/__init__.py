"""The embedded models: small MiniLM scorers that run on CPU with ONNX Runtime, no torch.

``minilm`` (tokenizer, token windows, the ONNX runner, frozen sentence embeddings),
``crossencoder`` (the fine-tuned cross-encoder at run time), ``ordinal`` (cut-point
probabilities to a rubric-aligned score) and ``scorers`` (the frozen-heads and ensemble
scorers, and which scorer a model folder holds). The moderator backend that wraps them is
:mod:`flexguard.moderators.embedded`; their training is :mod:`flexguard.train.embedded`.
"""
