"""``python -m model`` is ``python -m model.train``."""

from __future__ import annotations

import sys

from model.train import main

sys.exit(main())
