"""The hf-local judge on a tiny randomly initialised causal LM saved in a stage-like folder."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from mllm.testing.tiny import save_tiny_causal_lm  # noqa: E402


def _save_tiny_lm(folder):
    save_tiny_causal_lm(folder, corpus="rate the answer from 1 to 10", max_positions=128)


def test_hf_local_judge_greedy_and_cached(tmp_path):
    from mllm_eval.judges import HFLocalJudge, HFLocalJudgeConfig, JudgeError

    _save_tiny_lm(tmp_path / "stage" / "model")
    cfg = HFLocalJudgeConfig(path=str(tmp_path / "stage"), max_new_tokens=6, cache=str(tmp_path / "c.jsonl"))
    judge = HFLocalJudge(cfg)
    first = judge.complete("rate the answer", system="judge")
    assert isinstance(first, str)
    assert judge.complete("rate the answer", system="judge") == first
    # greedy: a fresh judge without cache gives the same text
    fresh = HFLocalJudge(HFLocalJudgeConfig(path=str(tmp_path / "stage" / "model"), max_new_tokens=6))
    assert fresh.complete("rate the answer", system="judge") == first
    assert len(HFLocalJudge(cfg).cache) == 1
    with pytest.raises(JudgeError, match="config.json"):
        HFLocalJudge(HFLocalJudgeConfig(path=str(tmp_path)))
