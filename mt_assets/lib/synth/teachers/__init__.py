"""Teachers: what writes synthetic sentence pairs. Plain classes, no Dagster; one module per back end.

* ``base``: the ``ChatTeacher`` protocol that ``generation.generate_synthetic`` talks to, and the
  errors every teacher raises.
* ``openai_compatible``: ``OpenAITeacher``, any OpenAI-compatible endpoint (vLLM, TGI, Ollama,
  llama-server, HF Inference Providers, OpenAI) through the official ``openai`` client; ``retry``
  holds its retry policy.
* ``local_transformers``: ``TransformersTeacher``, a causal LM run in this process.
* ``oracle``: ``OracleTeacher``, real pairs from a held-out pool, disjoint from train_A and test_A: the
  offline default and the perfect-teacher control. Its rows' origin says ``synthetic:oracle:...``.

Chat teachers answer a prompt (``prompt.build_messages``, topics mode) with text, and complete a
plain-text few-shot prompt (``prompt.build_translation_prompt``, translate mode); their replies are
cached per request by ``generation.generate_synthetic``.
"""
