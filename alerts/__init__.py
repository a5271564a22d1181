"""Funds alerts: the rules (docs/alerts.md), pure; the worker runs them in its batch (agents/alerting.py).

* ``config``: the thresholds file (``cashpos/alerts.toml``) and their resolution per account;
* ``model``: rule names, the alert, its public shape and messages, the records of the book's state;
* ``rules``, ``operational``: the decisions, pure functions of a position, its history and the
  clock passed in;
* ``history``: per position, the daily buckets and open commitments the rules read, and an
  account's fiscal years read as one while more than one is in play;
* ``lifecycle``: the alerts' state, ids and changes, and its records (``state.layout``);
* ``book``: the rules run over the ledger's batches (what the worker's hook calls), per account:
  rules 1-3 on the account as a whole, kept on its newest fiscal year; a year's close resolves
  every alert of that year.

Keep this file free of imports: ``state.layout`` imports ``alerts.model`` (the records it
encodes) and ``alerts.lifecycle`` imports ``state.layout``; importing the book here would make
that a cycle.
"""
