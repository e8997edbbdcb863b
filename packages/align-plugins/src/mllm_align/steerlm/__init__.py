"""The SteerLM / attribute-scoring family (the mllm-dpo comparison), as plugins of every kind it needs.

- :mod:`~mllm_align.steerlm.attributes`: the five SteerLM attributes (Helpfulness,
  Correctness, Coherence, Complexity, Verbosity, each 0-4), the aggregate, the judge
  prompt and reply parsing, the steering text;
- :mod:`~mllm_align.steerlm.description`: attributes by rules for image descriptions
  (easy-VQA's colours and shapes);
- :mod:`~mllm_align.steerlm.rule`: the ``attributes`` score rule (a generate stage's
  ``score: {rule: attributes, ...}``);
- :mod:`~mllm_align.steerlm.style`: the ``steerlm`` prompt style (an eval stage's ``steer:``);
- :mod:`~mllm_align.steerlm.method`: the ``steerlm`` method (SFT conditioned on each
  candidate's attributes);
- :mod:`~mllm_align.steerlm.describe_data` / :mod:`~mllm_align.steerlm.describe_benchmark`:
  the ``easyvqa-describe`` dataset and benchmark (describe an easy-VQA image in one sentence).

The ``best-vs-worse`` pairing and rejection sampling rank by the generic ``metadata.score``
any rule writes (:mod:`mllm_align.candidates`); with ``attributes`` that is the aggregate.
"""
