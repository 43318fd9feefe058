"""``python -m bench.soak`` from the repository's root (what scripts/soak runs)."""

import sys

from bench.soak.campaign import main

sys.exit(main())
