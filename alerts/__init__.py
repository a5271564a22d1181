"""Funds alerts: the rules (docs/alerts.md), pure; the worker runs them in its batch (agents/alerting.py).

* ``config``: the thresholds file (``cashpos/alerts.toml``) and their resolution per account;
* ``model``: rule names, the alert, its public shape and messages, the records of the book's state;
* ``rules``: the decisions, pure functions of the position and its history (no clock, no I/O);
* ``history``: per position, the daily buckets and open commitments the rules read;
* ``book``: the alerts' state and lifecycle across batches, and its records (``state.layout``).

This package imports no module that imports it back (``state.layout`` reads ``alerts.model``):
keep this file free of imports.
"""
