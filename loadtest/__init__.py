"""Locust load tests for cashpos: a business day of 150,000 sessions and 600,000 transactions.

Three parts (README.md has a table of every file): the model, pure (``days``, ``profile``,
``plan``: no Locust import); what Locust loads (``locustfile`` and the users, shapes, probes and
recording it imports); the runner, ``python -m loadtest.run`` (``run`` and the stack, tokens,
monitor, headless Locust, verdict and report modules it uses).
"""
