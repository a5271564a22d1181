"""Redis service accounts (ACL users), least privilege per process, for one namespace.

==========  ==========================================================================
user        may
==========  ==========================================================================
processor   read and write the namespace's keys, publish on its channels (the workers,
            ``cashpos reconcile``)
api         read the namespace's keys; write only acknowledgements, threshold overrides,
            tokens and the record of submitted events (their fates); publish/subscribe on
            its channels (the HTTP API)
admin       read and write the namespace's keys (``cashpos token``, operators)
==========  ==========================================================================

No user may run dangerous commands (FLUSHALL, CONFIG, KEYS, DEBUG, ...) or touch another
namespace's keys. The development stack (``cashpos.devstack``) creates them for its namespace
(:func:`create_accounts`); ``cashpos run`` also turns its embedded Redis's default (password-less)
user off. For a managed Redis, ``cashpos redis-acl`` prints the same rules.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

from cashpos.names import RedisKeys

if TYPE_CHECKING:
    import redis

ROLES = ("processor", "api", "admin")
_COMMANDS = [
    "-@all",
    "+@read",
    "+@write",
    "+@scripting",
    "+@connection",
    "+@transaction",
    "+@pubsub",
    "+ping",
    "-@dangerous",
]


def user_name(namespace: str, role: str) -> str:
    return f"{namespace}-{role}"


def rules(namespace: str, role: str) -> list[str]:
    """The ACL SETUSER rules (without the password) of one service account."""
    k = RedisKeys(namespace)
    if role in ("processor", "admin"):
        keys = [f"~{k.pattern}"]
    elif role == "api":
        keys = [
            f"%R~{k.pattern}",
            f"~{k.alerts_acks}",
            f"~{k.thresholds}",
            f"~{k.tokens}",
            f"~{k.fates_pattern}",
        ]
    else:
        raise ValueError(f"unknown service account {role!r}; one of {', '.join(ROLES)}")
    return ["reset", "on", "resetchannels", f"&{k.pattern}", *keys, *_COMMANDS]


def url_for(base_url: str, user: str, password: str) -> str:
    """``base_url`` with these credentials."""
    u = urlsplit(base_url)
    host = u.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def apply(
    redis_client: redis.Redis, namespace: str, base_url: str, passwords: dict[str, str] | None = None
) -> dict[str, str]:
    """Create (or reset) the three users with ``redis_client`` (sync, allowed to run ACL);
    returns role -> connection URL. Passwords are generated unless given."""
    out = {}
    for role in ROLES:
        pw = (passwords or {}).get(role) or secrets.token_urlsafe(24)
        user = user_name(namespace, role)
        redis_client.execute_command("ACL", "SETUSER", user, *rules(namespace, role), f">{pw}")
        out[role] = url_for(base_url, user, pw)
    return out


def disable_default_user(redis_client: redis.Redis) -> None:
    redis_client.execute_command("ACL", "SETUSER", "default", "off")


def create_accounts(
    admin_url: str, namespace: str, passwords: dict[str, str] | None = None, *, default_off: bool = False
) -> dict[str, str]:
    """:func:`apply` over a connection of its own to ``admin_url`` (a user allowed to run ACL,
    such as an embedded Redis's default user); returns role -> URL (``admin_url``'s address with
    the account's credentials). ``default_off``: then switch the default user off."""
    import redis

    r = redis.Redis.from_url(admin_url)
    try:
        urls = apply(r, namespace, admin_url, passwords)
        if default_off:
            disable_default_user(r)
    finally:
        r.close()
    return urls
