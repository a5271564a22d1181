"""Every API route is public by name or declares the permission it needs (no stack: the app's
routes as ``serving.app.create_app`` builds them). The access matrix against the running API is
tests/test_access.py."""

from __future__ import annotations


def test_every_route_is_public_by_name_or_declares_its_permission() -> None:
    from serving.app import create_app
    from serving.security import is_public

    def walk(routes):
        for r in routes:
            inner = getattr(r, "original_router", None)
            yield from walk(inner.routes) if inner is not None else [r]

    unguarded = []
    for r in walk(create_app().routes):
        dep = getattr(r, "dependant", None)
        methods = getattr(r, "methods", None) or {"GET"}
        if all(is_public(m, r.path) for m in methods):
            continue
        names = [d.call.__name__ for d in dep.dependencies] if dep else []
        if not any(n.startswith("require_") for n in names):
            unguarded.append(r.path)
    assert unguarded == []
