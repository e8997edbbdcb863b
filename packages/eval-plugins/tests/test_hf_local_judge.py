"""The hf-local judge on a tiny randomly initialised causal LM saved in a stage-like folder."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def _save_tiny_lm(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["rate the answer from 1 to 10"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=fast.vocab_size, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=128, eos_token_id=0, pad_token_id=0))
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)


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
