"""Who a demo node is, for Airflow in the loopback layout, where the three nodes share one
host name: ``AIRFLOW__CORE__HOSTNAME_CALLABLE = demo.identity.node_hostname`` (with the
repository on ``PYTHONPATH``) makes Airflow record the node's name in its job table."""

from __future__ import annotations

import os
import socket


def node_hostname() -> str:
    """``HFDEMO_NODE`` (n1, n2, n3), or Airflow's default outside the demo."""
    return os.environ.get("HFDEMO_NODE") or socket.getfqdn()
