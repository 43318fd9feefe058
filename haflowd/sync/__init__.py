"""DAG synchronisation with csync2.

- ``schedule.py``: when to run and against whom (triggers, coalescing, per-peer state
  with backoff). Pure: the time comes from a clock, decisions go out.
- ``runner.py``: csync2 itself (a TCP probe, a bounded run per peer in its own process
  group, ``csync2 -M``, reading csync2's output).
- ``service.py``: the wiring (watchdog, gossip statuses, requests, the loop); it publishes
  the ``sync`` check, a snapshot (``GET /sync``, rendered by the API) and metrics.
"""
