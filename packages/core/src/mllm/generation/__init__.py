"""The one generation engine: answering (generation and choice scoring), sampling, decoding helpers, the cache.

:mod:`~mllm.generation.engine` (``AnswerEngine``: greedy answers and choice scoring for
eval and generate stages) plans its work in :mod:`~mllm.generation.planning`, scores
closed sets in :mod:`~mllm.generation.choice` and reuses prompt starts through
:mod:`~mllm.generation.prefix_cache`; :mod:`~mllm.generation.sampling`
(``SampleGenerator``: several answers per prompt) and the engine decode through the same
helpers, :mod:`~mllm.generation.decoding`; every cache of the project is a
:class:`~mllm.generation.cache.KeyedJsonlCache`. Nothing here imports torch at import time.
"""
