"""Locust load tests for cashpos: a business day of 150,000 sessions and 600,000 transactions.

``loadtest/profile.py`` is the pure model (no Locust import), ``loadtest/locustfile.py`` the
users and shapes, ``loadtest/run.py`` the runner (``python -m loadtest.run``). See README.md.
"""
