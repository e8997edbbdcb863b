"""Data plumbing every stage shares: the bad-row policy, record files, reading earlier stages."""
