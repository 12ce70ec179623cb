"""Measurement studies the docs quote (`python -m studies.NAME`): not part of the wheel.

They may use the test helpers (`tests/support`, `tests/_sshd.py`); nothing shipped imports them.
"""
