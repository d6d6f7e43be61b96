"""model-fleet's shared core: what the control plane (orchestrator/) and the workers
(workers/) both use. Nothing here imports torch or transformers.

Imports run one way: orchestrator -> fleet <- workers (tests/test_layout.py checks it).
"""

__version__ = "0.1.0"
