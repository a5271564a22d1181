"""The C kernel (``state/_kernel.c``): the ledger's hot loop and the journal puts of a batch.

``pip install`` compiles it; without a C compiler the install still succeeds and the pure
Python paths do the same work, slower. ``CASHPOS_PURE_PYTHON=1`` switches it off (to compare).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

built: ModuleType | None
try:
    built = importlib.import_module("state._kernel")  # an extension module: no type information
except ImportError:
    built = None

kernel: ModuleType | None = None if os.environ.get("CASHPOS_PURE_PYTHON", "") in ("1", "true") else built
