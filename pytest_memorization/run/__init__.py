"""One memorization run inside pytest: the run state, the item pipeline (manifest -> generation -> scores -> findings -> verdict), pytest items and fixtures, sharding and the session's outputs."""
