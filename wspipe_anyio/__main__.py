"""``python -m wspipe_anyio serve|demo``."""

import sys

from .cli import main

sys.exit(main())
