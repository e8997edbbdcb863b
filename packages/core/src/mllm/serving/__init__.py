"""``mllm serve``: an OpenAI-compatible chat-completions endpoint for a trained model.

The modules, one job each:

* :mod:`~mllm.serving.model`: what to serve (a model folder or ``runs/<pipeline>/<stage>``);
* :mod:`~mllm.serving.schema`: the accepted request JSON and OpenAI-style errors;
* :mod:`~mllm.serving.images`: data URLs and ``--image-root`` files, with their limits;
* :mod:`~mllm.serving.prompts`: chat messages to the turns and images the model answers;
* :mod:`~mllm.serving.batching`: concurrent requests batched through the eval engine;
* :mod:`~mllm.serving.app`: the FastAPI app (needs the ``serve`` extra).

See docs/serve.md for the API subset, the limits and the security defaults.
"""
