"""Gunicorn config for the floor app: the service's own worker class, nothing else.

`gunicorn -c benchmarks/floor_gunicorn_conf.py` (BIND and WEB_CONCURRENCY from the env).
"""

import os as _os

wsgi_app = "benchmarks.floor_app:create_app()"
worker_class = "service.core.worker.ServiceWorker"
bind = _os.environ.get("BIND", "127.0.0.1:8000").split(",")
workers = int(_os.environ.get("WEB_CONCURRENCY", "2"))
keepalive = 5
accesslog = None
loglevel = "warning"
control_socket_disable = True
