"""python -m gossip_sim: the simulator's command line (gossip_sim.simulator.main)."""

import sys

from gossip_sim.simulator import main

sys.exit(main())
