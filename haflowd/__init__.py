"""haflowd: supervise, gossip, sync and health-check the nodes of an Airflow cluster."""

__version__ = "0.2.0"
