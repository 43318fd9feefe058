"""scripts/soak: a seeded fault campaign on three real haflowd daemons (see campaign.py)."""
