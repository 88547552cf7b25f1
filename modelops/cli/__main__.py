"""`python -m modelops.cli`: the same entry as the `modelops` script."""

from __future__ import annotations

import sys

from modelops.cli.entry import main

sys.exit(main())
