"""Who may do what to which government's money: roles, permissions and scopes. Pure, no I/O.

A principal (a person signed in to the dashboard, or a system) holds one role and a scope: the
set of governments it may touch, or ``None`` for all of them. The server checks both on every
request; everything not granted here is denied.

==================  =========================================  ==================================
role                scope (``--org``)                          may
==================  =========================================  ==================================
finance_director    exactly one government                     read, acknowledge alerts
viewer              exactly one government                     read
provincial          one metropolitan government (광역): it     read
                    and the basic governments of its province
national            all (no ``--org``)                         read, operations
integration         the listed governments                     read
source              the listed governments                     submit events
admin               all (no ``--org``)                         tokens, thresholds, operations,
                                                               the audit log; no balance reads
metrics             none (no ``--org``)                        scrape /metrics, nothing else
==================  =========================================  ==================================

The ``metrics`` role is what a Prometheus server holds: its token (kept in a file on the
Prometheus host) can read no balance, no government and no dead letter if it leaks.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import msgspec

from cashpos.refdata import governments


class Role(StrEnum):
    FINANCE_DIRECTOR = "finance_director"
    VIEWER = "viewer"
    PROVINCIAL = "provincial"
    NATIONAL = "national"
    INTEGRATION = "integration"
    SOURCE = "source"
    ADMIN = "admin"
    METRICS = "metrics"


class Permission(StrEnum):
    REFDATA = "refdata"  # the governments and charts of accounts in scope
    READ = "read"  # balances, alerts, thresholds, the live stream
    ACK = "ack"  # acknowledge an alert
    INGEST = "ingest"  # submit events
    THRESHOLDS = "thresholds"  # read and change alert thresholds
    TOKENS = "tokens"  # create, list and revoke tokens
    OPERATIONS = "operations"  # dead letters, reconciliation (and metrics: granted with it)
    AUDIT = "audit"  # read the audit log
    METRICS = "metrics"  # scrape /metrics (service-wide counters; no government's figures)


P = Permission
GRANTS: dict[Role, frozenset[Permission]] = {
    Role.FINANCE_DIRECTOR: frozenset({P.REFDATA, P.READ, P.ACK}),
    Role.VIEWER: frozenset({P.REFDATA, P.READ}),
    Role.PROVINCIAL: frozenset({P.REFDATA, P.READ}),
    Role.NATIONAL: frozenset({P.REFDATA, P.READ, P.OPERATIONS, P.METRICS}),
    Role.INTEGRATION: frozenset({P.REFDATA, P.READ}),
    Role.SOURCE: frozenset({P.REFDATA, P.INGEST}),
    Role.ADMIN: frozenset({P.REFDATA, P.THRESHOLDS, P.TOKENS, P.OPERATIONS, P.AUDIT, P.METRICS}),
    Role.METRICS: frozenset({P.METRICS}),
}
# Reads by these roles span governments that are not their own: each one is audited.
AUDITED_READERS = frozenset({Role.PROVINCIAL, Role.NATIONAL})


class ScopeError(ValueError):
    """A role and a list of governments that do not make a valid grant."""


def resolve_scope(role: Role, orgs: Iterable[str]) -> frozenset[str] | None:
    """The governments a token of ``role`` created with ``--org orgs`` may touch (None: all)."""
    orgs = [o.strip() for o in orgs if o.strip()]
    govs = governments()
    unknown = [o for o in orgs if o not in govs]
    if unknown:
        raise ScopeError(f"unknown government(s): {', '.join(unknown)}")
    if role is Role.METRICS:
        if orgs:
            raise ScopeError("metrics reads no government's figures: give no --org")
        return frozenset()  # no government: any route naming one answers 404
    if role in (Role.NATIONAL, Role.ADMIN):
        if orgs:
            raise ScopeError(f"{role} covers every government: give no --org")
        return None
    if not orgs:
        raise ScopeError(f"{role} needs --org")
    if role in (Role.FINANCE_DIRECTOR, Role.VIEWER, Role.PROVINCIAL) and len(orgs) != 1:
        raise ScopeError(f"{role} is for exactly one government")
    if role is Role.PROVINCIAL:
        head = govs[orgs[0]]
        if head.level != "metropolitan":
            raise ScopeError(f"provincial needs a metropolitan government (광역), not {head.name}")
        return frozenset(g.org_code for g in govs.values() if g.province_code == head.org_code)
    return frozenset(orgs)


class Principal(msgspec.Struct, frozen=True):
    """An authenticated caller. ``orgs`` is the resolved scope (None: every government)."""

    token_id: str
    name: str
    role: Role
    orgs: frozenset[str] | None
    rate_per_s: int

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]

    def covers(self, org: str) -> bool:
        return self.orgs is None or org in self.orgs

    def visible(self, orgs: Iterable[str]) -> list[str]:
        return [o for o in orgs if self.covers(o)]

    @property
    def audited_reads(self) -> bool:
        return self.role in AUDITED_READERS


class Decision(msgspec.Struct, frozen=True):
    status: int  # 200 allowed, 403 forbidden, 404 out of scope (indistinguishable from unknown)
    reason: str = ""


ALLOW = Decision(200)


def decide(p: Principal, permission: Permission, org: str | None = None) -> Decision:
    """The verdict on one request. A government outside the scope answers like an unknown one
    (404), so no one learns which codes exist beyond their own; a permission the role lacks
    on a government it can see answers 403."""
    if org is not None and not p.covers(org):
        return Decision(404, f"unknown government {org}")
    if not p.may(permission):
        return Decision(403, f"role {p.role} may not {permission}")
    return ALLOW
