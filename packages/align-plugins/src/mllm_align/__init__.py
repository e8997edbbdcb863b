"""mllm-align: mllm plugins for alignment methods (SFT, DPO, ...)."""
