"""report.html, the browsable report of a run (:mod:`~mllm.reporting.build`).

* :mod:`~mllm.reporting.sources`: what is read from the run folder (logs, answers, metrics);
* :mod:`~mllm.reporting.svg`: the inline charts;
* :mod:`~mllm.reporting.thumbnails`: the embedded image thumbnails;
* :mod:`~mllm.reporting.html`: the page;
* :mod:`~mllm.reporting.build`: writing it, for a report stage or for any run folder.
* :mod:`~mllm.reporting.findings`: metrics over seeds (mean, std, n) and the verdict per claim of ``findings:``.
"""
