"""``python -m pytest_memorization``: options table, report merge, baseline and index tools."""
