"""`python -m orchestrator.cli`, the same as `python -m orchestrator`."""

import sys

from orchestrator.cli import main

sys.exit(main())
