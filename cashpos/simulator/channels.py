"""The event channels: the spontaneous event streams the generator draws from.

Each channel (a revenue category, custody in/out, commitments, direct payments, payroll,
transfers, reversals) has a share of all events, a time profile (office hours, online, payroll
days; see ``rhythm``), an amount target (a share of the annual budget), a log-normal spread, a
rounding unit and a mix of the account types it books to.
"""

from __future__ import annotations

from typing import Final

REFERENCE_EVENTS_PER_DAY: Final = 600_000  # national volume the amounts are calibrated to
FREQ_EXPONENT: Final = 0.8  # events per government ~ budget**0.8, amount scale ~ budget**0.2
PRIOR_YEAR_SHARE: Final = 0.30  # receipts/direct payments carrying year-1 between 1 and 20 Jan

CATEGORIES: Final = ("local_tax", "non_tax", "grant", "subsidy", "bond", "other")
REV_AMOUNT_SHARES: Final = {  # share of yearly revenue by category, per budget class
    "metro_city": (0.45, 0.05, 0.08, 0.27, 0.04, 0.11),
    "province": (0.30, 0.03, 0.14, 0.42, 0.03, 0.08),
    "si": (0.22, 0.07, 0.20, 0.38, 0.02, 0.11),
    "gun": (0.07, 0.05, 0.42, 0.35, 0.01, 0.10),
    "gu": (0.12, 0.05, 0.25, 0.48, 0.005, 0.095),
}
_RECEIPT_SHARE: Final = 0.79
_REV_COUNT_SHARES: Final = (0.60, 0.37, 0.001, 0.008, 0.0001, 0.0209)

# Commitment plans: mean follow-up events per commitment and mean share of the amount paid.
FOLLOWUPS_PER_COMMITMENT: Final = 0.70 * 1 + 0.15 * 3 + 0.08 * 2.5 + 0.04 * 1 + 0.03 * 2
_PAID_SHARE: Final = 0.70 + 0.15 + 0.08 * 0.6 + 0.03 * 0.7

R_TAX, R_NONTAX, R_GRANT, R_SUBSIDY, R_BOND, R_OTHER = range(6)
C_CUST_IN, C_CUST_OUT, C_COMMIT, C_DIRECT, C_PAYROLL, C_TRANSFER, C_REVERSAL = range(6, 13)
N_CHANNELS: Final = 13

# (count share of all events, profile style, sigma, rounding unit, account mix by type)
CHANNELS: Final[list[tuple[float, str, float, int, dict[str, float]]]] = [
    (_RECEIPT_SHARE * _REV_COUNT_SHARES[0], "online", 2.2, 10, {"general": 0.93, "special": 0.07}),
    (
        _RECEIPT_SHARE * _REV_COUNT_SHARES[1],
        "online",
        1.4,
        10,
        {"general": 0.55, "enterprise": 0.40, "special": 0.05},
    ),
    (_RECEIPT_SHARE * _REV_COUNT_SHARES[2], "office", 1.0, 1000, {"general": 0.95, "special": 0.05}),
    (
        _RECEIPT_SHARE * _REV_COUNT_SHARES[3],
        "office",
        1.3,
        1000,
        {"general": 0.80, "special": 0.15, "fund": 0.05},
    ),
    (
        _RECEIPT_SHARE * _REV_COUNT_SHARES[4],
        "office",
        0.8,
        1_000_000,
        {"general": 0.60, "enterprise": 0.25, "special": 0.15},
    ),
    (
        _RECEIPT_SHARE * _REV_COUNT_SHARES[5],
        "office",
        1.6,
        1,
        {"general": 0.55, "fund": 0.35, "special": 0.10},
    ),
    (0.004, "office", 1.5, 1000, {"custody": 1.0}),  # guarantee deposits in
    (0.004, "office", 1.5, 1000, {"custody": 1.0}),  # ... and paid back
    (0.060, "office", 1.7, 1000, {"general": 0.75, "enterprise": 0.12, "special": 0.13}),
    (0.040, "office", 1.6, 1, {"general": 0.72, "enterprise": 0.10, "special": 0.12, "fund": 0.06}),
    (0.003, "payroll", 0.6, 10, {"general": 0.92, "enterprise": 0.08}),
    (0.008, "office", 1.2, 1000, {}),  # transfers: see TRANSFER_MIX
    (0.002, "office", 0.0, 1, {}),  # reversals copy the original
]
# Yearly amount per channel as a share of the budget (receipts: per class, see above).
OUT_AMOUNT: Final = {
    C_CUST_IN: 0.02,
    C_CUST_OUT: 0.02,
    C_COMMIT: 0.63 / _PAID_SHARE,
    C_DIRECT: 0.25,
    C_PAYROLL: 0.12,
    C_TRANSFER: 0.12,
}
TRANSFER_MIX: Final = {  # (from type, to type) -> share of transfers
    ("general", "special"): 0.35,
    ("general", "fund"): 0.30,
    ("general", "enterprise"): 0.10,
    ("fund", "general"): 0.10,
    ("special", "general"): 0.10,
    ("special", "fund"): 0.05,
}
SOURCES: Final = {
    R_TAX: "lofin-tax",
    R_NONTAX: "sewoe",
    R_GRANT: "efs-grant",
    R_SUBSIDY: "e-naradoum",
    R_BOND: "bank-gateway",
    R_OTHER: "bank-gateway",
    C_CUST_IN: "bank-gateway",
    C_CUST_OUT: "e-hojo",
    C_COMMIT: "e-hojo",
    C_DIRECT: "e-hojo",
    C_PAYROLL: "insarang-payroll",
    C_TRANSFER: "e-hojo",
}
N_GOVS: Final = 243
SLOTS: Final = 200  # per-government account lookup tables

# Per channel: (kind, category, source, sigma, rounding unit, may carry the prior fiscal year)
CH_INFO: Final = [
    (
        "receipt" if c <= C_CUST_IN else "payment" if c in (C_CUST_OUT, C_DIRECT, C_PAYROLL) else "",
        CATEGORIES[c] if c < 6 else "other" if c == C_CUST_IN else None,
        SOURCES.get(c, "e-hojo"),
        CHANNELS[c][2],
        CHANNELS[c][3],
        (c <= C_CUST_IN and c != R_BOND) or c == C_DIRECT,
    )
    for c in range(N_CHANNELS)
]
