"""Ledger state: the pure fold, its RocksDB store and its Redis projection."""
