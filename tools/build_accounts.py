"""Generate cashpos/refdata/accounts.csv, the chart of accounts per government.

Deterministic (seeded by org_code) so the committed file can be rebuilt and diffed.
Sizes follow DOMAIN.md: nationally about 9 budget accounts (1 general + special) and
10 funds per government, plus `custody` (세입세출외현금) outside the budget.
Run: python tools/build_accounts.py
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

REFDATA = Path(__file__).resolve().parent.parent / "cashpos" / "refdata"

# (code, Korean name, type) — type: general | enterprise | special | fund | custody
ENTERPRISE = [
    ("water_supply", "상수도사업특별회계"),
    ("sewerage", "하수도사업특별회계"),
    ("public_dev", "지역개발공영개발사업특별회계"),
    ("transit", "도시철도사업특별회계"),
]
SPECIAL = [
    ("medical_aid", "의료급여특별회계"),
    ("parking", "주차장특별회계"),
    ("housing", "주택사업특별회계"),
    ("agri_loan", "농업발전특별회계"),
    ("land_dev", "도시개발특별회계"),
    ("waste", "폐기물처리시설특별회계"),
    ("industrial", "산업단지조성특별회계"),
    ("balanced_dev", "균형발전특별회계"),
    ("gov_building", "청사건립특별회계"),
    ("fire_safety", "소방안전교부세특별회계"),
    ("education_tax", "교육비특별회계전출금특별회계"),
    ("river", "하천관리특별회계"),
]
FUNDS = [
    ("fund_fiscal_stab", "통합재정안정화기금"),
    ("fund_disaster", "재난관리기금"),
    ("fund_disaster_relief", "재해구호기금"),
    ("fund_welfare", "사회복지기금"),
    ("fund_housing", "주택사업기금"),
    ("fund_sme", "중소기업육성기금"),
    ("fund_agri", "농어촌진흥기금"),
    ("fund_culture", "문화예술진흥기금"),
    ("fund_scholarship", "장학기금"),
    ("fund_environment", "환경보전기금"),
    ("fund_gender", "양성평등기금"),
    ("fund_youth", "청소년육성기금"),
    ("fund_senior", "노인복지기금"),
    ("fund_disabled", "장애인복지기금"),
    ("fund_green", "녹색성장기금"),
    ("fund_tourism", "관광진흥기금"),
]


def chart(org_code: str, name: str, level: str) -> list[tuple[str, str, str]]:
    rng = random.Random(int(org_code))
    rows = [("general", "일반회계", "general")]
    if level == "metropolitan":
        ent = ENTERPRISE[:]
        n_special, n_funds = rng.randint(9, 12), rng.randint(12, 16)
    else:
        # Autonomous districts (자치구) run no water or sewer utility; cities and counties do.
        ent = [] if name.endswith("구") else ENTERPRISE[:2]
        if not name.endswith("구") and rng.random() < 0.3:
            ent.append(ENTERPRISE[2])
        n_special, n_funds = rng.randint(4, 7), rng.randint(8, 12)
    rows += [(c, n, "enterprise") for c, n in ent]
    rows += [(c, n, "special") for c, n in rng.sample(SPECIAL, n_special)]
    rows += [(c, n, "fund") for c, n in rng.sample(FUNDS, n_funds)]
    rows.append(("custody", "세입세출외현금", "custody"))
    order = {"general": 0, "enterprise": 1, "special": 2, "fund": 3, "custody": 4}
    return sorted(rows, key=lambda r: (order[r[2]], r[0]))


def main() -> None:
    with open(REFDATA / "municipalities.csv", encoding="utf-8") as f:
        govs = list(csv.DictReader(f))
    out = REFDATA / "accounts.csv"
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["org_code", "account", "name", "type"])
        for g in govs:
            for code, kname, typ in chart(g["org_code"], g["name"], g["level"]):
                w.writerow([g["org_code"], code, kname, typ])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
