"""Everything haflowd knows of the Airflow it supervises, one concern per module.

* ``version``: Airflow's own configuration as Airflow reads it (``AirflowSettings``), the
  installed version (``detect_version``), the options of an ``airflow`` command line.
* ``presets``: each Airflow component's command, health probe, restart and stop settings,
  on Airflow 2 and 3.
* ``jobs``: the job heartbeat query of the metadata database, and the probe built on it.
* ``celery_ping``: Celery's remote-control ping of one worker over AMQP.

Nothing is re-exported here. Config loading imports ``presets`` and ``jobs`` before the
daemon decides whether it needs OpenSSL or aio-pika, so at the top these modules import
only the standard library and each other; aio-pika, psycopg2 and the worker budgets are
loaded where they are used.
"""
