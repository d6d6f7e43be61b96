"""model-fleet control plane: catalog, submission, result store, reports, schedule.

Nothing in this package imports torch or transformers.
"""

__version__ = "0.1.0"
