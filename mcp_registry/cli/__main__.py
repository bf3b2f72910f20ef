"""`python -m mcp_registry.cli`."""

import sys

from mcp_registry.cli import main

sys.exit(main())
