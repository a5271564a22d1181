"""Reconciliation: an independent reference fold to check the ledger processor against."""

from reconcile.reference import Reference, fold

__all__ = ["Reference", "fold"]
