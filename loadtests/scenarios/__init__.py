"""Locust user classes, one module per scenario (these import locust: load them only in a
Locust process, through loadtests/locustfile.py)."""
