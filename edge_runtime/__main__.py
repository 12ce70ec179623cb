"""`python -m edge_runtime predict|bench|info MODEL ...`."""

import sys

from edge_runtime.cli import main

sys.exit(main())
