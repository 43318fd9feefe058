"""The demo's three-node Airflow cluster on one machine (scripts/demo; tests/integration/test_demo_cluster.py)."""
