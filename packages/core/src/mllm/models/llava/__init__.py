"""The built-in LLaVA-1.5 family: adapter, torch-free config, tiny builder, original-checkpoint conversion."""
