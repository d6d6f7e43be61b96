"""Reproducers of adversarial findings (python -m tests.adversary.NAME); tests/test_adversary.py runs them."""
