"""Funds alerts: the rules (docs/alerts.md), pure; the worker runs them in its batch (agents/alerting.py).

* ``config``: the thresholds file (``cashpos/alerts.toml``) and their resolution per account;
* ``model``: rule names, the alert, its public shape and messages, the records of the book's state;
* ``rules``, ``operational``: the decisions, pure functions of a position, its history and the
  clock passed in;
* ``history``: per position, the daily buckets and open commitments the rules read;
* ``lifecycle``: the alerts' state, ids and changes, and its records (``state.layout``);
* ``book``: the rules run over the ledger's batches (what the worker's hook calls).

Keep this file free of imports: ``state.layout`` imports ``alerts.model`` (the records it
encodes) and ``alerts.lifecycle`` imports ``state.layout``; importing the book here would make
that a cycle.
"""
