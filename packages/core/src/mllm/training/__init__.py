"""The trainer host: settings, the ``transformers.Trainer`` subclass, checkpoint safety, helpers for methods."""
