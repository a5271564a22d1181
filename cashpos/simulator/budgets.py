"""Annual budgets of the 243 governments, the scale every amount and volume is drawn to.

The 17 metropolitan/provincial governments use rounded published totals (Seoul 45.7조, Busan
17.1조, ...). Basic governments get a base by suffix (Seoul 구 ~7,500억, other 구 ~5,000억,
시 ~1.2조 with a table of large cities, 군 ~4,500억) times a log-uniform jitter seeded by
org_code (so sizes do not change with the run seed); 도봉구 is pinned to 8,293억 and 울릉군, the
smallest county, to 2,615억.
"""

from __future__ import annotations

import math
import random
from functools import cache
from typing import Final

from cashpos.refdata import governments

JO: Final = 10**12  # 조원
EOK: Final = 10**8  # 억원

_METRO_BUDGETS: Final = {  # rounded annual totals (일반+특별+기금), 억원
    "서울특별시": 457_000,
    "부산광역시": 171_000,
    "대구광역시": 116_000,
    "인천광역시": 156_000,
    "광주광역시": 76_000,
    "대전광역시": 73_000,
    "울산광역시": 52_000,
    "세종특별자치시": 23_000,
    "경기도": 380_000,
    "강원특별자치도": 90_000,
    "충청북도": 82_000,
    "충청남도": 110_000,
    "전북특별자치도": 100_000,
    "전라남도": 120_000,
    "경상북도": 136_000,
    "경상남도": 133_000,
    "제주특별자치도": 75_000,
}
_BIG_CITIES: Final = {  # large 시 (특례시 etc.), 억원, before jitter
    "수원시": 36_000,
    "용인시": 37_000,
    "고양시": 32_000,
    "성남시": 37_000,
    "화성시": 39_000,
    "창원시": 42_000,
    "청주시": 36_000,
    "부천시": 24_000,
    "남양주시": 23_000,
    "안산시": 24_000,
    "안양시": 19_000,
    "평택시": 25_000,
    "전주시": 26_000,
    "천안시": 28_000,
    "김해시": 22_000,
    "포항시": 29_000,
    "시흥시": 20_000,
    "파주시": 22_000,
    "김포시": 19_000,
    "원주시": 17_000,
    "구미시": 18_000,
    "경주시": 18_000,
    "진주시": 19_000,
    "의정부시": 16_000,
    "광주시": 15_000,
}
_PINNED: Final = {"도봉구": 8_293, "울릉군": 2_615}  # DOMAIN.md (도봉구: Seoul; 울릉군: 경북)
_SMALLEST_COUNTY: Final = 2_615


def budget_class(name: str, level: str) -> str:
    """metro_city | province | si | gun | gu, from level and name suffix."""
    if level == "metropolitan":
        return "province" if name.endswith("도") else "metro_city"
    if name.endswith("구"):
        return "gu"
    if name.endswith("군"):
        return "gun"
    return "si"


@cache
def annual_budgets() -> dict[str, int]:
    """Plausible annual budget per government (KRW, rounded to 억), by org_code."""
    out: dict[str, int] = {}
    for code, g in governments().items():
        cls = budget_class(g.name, g.level)
        if cls in ("metro_city", "province"):
            eok = _METRO_BUDGETS.get(g.name, 80_000)
        elif g.name in _PINNED and (
            (g.name == "도봉구" and g.province_name == "서울특별시")
            or (g.name == "울릉군" and g.province_name == "경상북도")
        ):
            eok = _PINNED[g.name]
        else:
            rng = random.Random(f"cashpos-budget:{code}")  # str seeds are stable (sha512)
            if cls == "gu":
                base, lo, hi = (7_500, 0.8, 1.45) if g.province_name == "서울특별시" else (5_000, 0.6, 1.6)
            elif cls == "gun":
                base, lo, hi = 4_500, 0.68, 1.6
            else:
                base = _BIG_CITIES.get(g.name, 12_000)
                lo, hi = (0.9, 1.12) if g.name in _BIG_CITIES else (0.6, 1.6)
            eok = int(base * math.exp(rng.uniform(math.log(lo), math.log(hi))))
            if cls == "gun":
                eok = max(eok, _SMALLEST_COUNTY + 200)  # 울릉군 stays the smallest county
            eok = max(eok, _SMALLEST_COUNTY)
        out[code] = eok * EOK
    return out
