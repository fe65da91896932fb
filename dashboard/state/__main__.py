"""`python -m dashboard.state upgrade [--grant-to ROLE]` (see admin.py)."""

import sys

from dashboard.state.admin import main

sys.exit(main())
