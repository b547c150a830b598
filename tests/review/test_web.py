"""The console over HTTP: logins, CSRF, roles, escaping, the image route (in-process ASGI, real SQLite)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from moderation_worker.review.models import Item, Outbox
from moderation_worker.review.store import transaction
from tests.review.web_fixtures import PASSWORD, build_console

PUBLIC = {"/livez", "/readyz", "/metrics", "/login", "/static"}


@pytest.fixture
def console(tmp_path):
    console = build_console(tmp_path)
    yield console
    console.client.close()
    console.context.engine.dispose()


def _flat(routes):
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI keeps included routers as such
        if included is not None:
            yield from _flat(included.routes)
        else:
            yield route


def _routes(console):
    for route in _flat(console.client.app.routes):
        path, methods = getattr(route, "path", ""), getattr(route, "methods", None) or set()
        if path and not any(path.startswith(p) for p in PUBLIC):
            yield (
                path.replace("{item_id}", "1").replace("{user_id}", "1").replace("{policy_id}", "weapons"),
                methods,
            )


def test_every_page_refuses_a_request_without_a_session(console):
    routes = list(_routes(console))
    assert len(routes) > 12
    for path, methods in routes:
        for method in methods - {"HEAD"}:
            response = console.client.request(method, path, follow_redirects=False)
            if method == "GET":  # a browser is sent to log in; nothing of the page is served
                assert response.status_code == 303 and response.headers["location"].startswith("/login"), path
            else:
                assert response.status_code == 401, (method, path)


def test_operations_endpoints_answer_without_a_session_and_hold_no_content(console):
    assert console.client.get("/livez").json() == {"status": "ok"}
    ready = console.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "database": True,
        "migrations_current": True,
    }
    assert "moderation_review_decisions_total" in console.client.get("/metrics").text


def test_a_login_sets_an_httponly_samesite_cookie_and_wrong_passwords_are_refused(console):
    refused = console.client.post(
        "/login", data={"username": "mo", "password": "nope"}, follow_redirects=False
    )
    assert refused.status_code == 401 and "wrong user name or password" in refused.text
    ok = console.client.post("/login", data={"username": "mo", "password": PASSWORD}, follow_redirects=False)
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http on loopback; https requests get Secure


def test_the_login_page_never_redirects_off_the_site(console):
    response = console.client.post(
        "/login",
        data={"username": "mo", "password": PASSWORD, "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"


def test_a_state_change_without_its_csrf_token_is_refused(console):
    console.login("mo")
    for path, data in (
        ("/next", {"queue": "default"}),
        ("/items/1/decide", {"action": "uphold"}),
        ("/logout", {}),
    ):
        assert console.client.post(path, data=data).status_code == 403, path
        assert console.client.post(path, data=data | {"csrf_token": "forged"}).status_code == 403, path
    with transaction(console.context.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0
        assert session.scalar(select(Item.claimed_by).where(Item.id == 1)) is None


def test_a_moderator_cannot_reach_lead_or_admin_pages(console):
    console.login("mo")
    token = console.csrf()
    for path in (
        "/audit",
        "/audit.jsonl",
        "/policies",
        "/policies/weapons",
        "/admin/users",
        "/?queue=escalated",
    ):
        response = console.client.get(path)
        assert response.status_code == 403 or "Waiting in default" in response.text, path
    assert console.client.post("/items/1/release", data={"csrf_token": token}).status_code == 403
    assert (
        console.client.post(
            "/admin/users", data={"csrf_token": token, "name": "x", "role": "admin"}
        ).status_code
        == 403
    )
    assert console.client.post("/next", data={"csrf_token": token, "queue": "escalated"}).status_code == 403


def test_a_lead_and_an_admin_reach_their_pages(console):
    console.login("lee")
    assert console.client.get("/audit").status_code == 200
    assert console.client.get("/policies/weapons").status_code == 200
    assert console.client.get("/admin/users").status_code == 403
    console.login("ada")
    assert console.client.get("/admin/users").status_code == 200


def test_metadata_holding_script_and_html_renders_inert(console):
    console.login("mo")
    taken = console.client.post("/next", data={"csrf_token": console.csrf(), "queue": "default"})
    assert taken.status_code == 200
    page = taken.text
    assert "<script>alert" not in page and "<b>key</b>" not in page
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in page and "&lt;b&gt;key&lt;/b&gt;" in page
    assert "script-src 'self'" in taken.headers["content-security-policy"]


def test_the_image_route_serves_only_queue_items_images_as_images(console):
    console.login("mo")
    taken = console.client.post("/next", data={"csrf_token": console.csrf(), "queue": "default"})
    item_id = int(str(taken.url).rsplit("/", 1)[1])
    image = console.client.get(f"/items/{item_id}/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert (
        image.headers["x-content-type-options"] == "nosniff" and image.headers["cache-control"] == "no-store"
    )
    assert image.content.startswith(b"\xff\xd8")  # re-encoded: a JPEG whatever the object was
    # no path or URL from the request reaches the store: only the item's own verdict's image
    for path in ("/items/999/image", f"/items/{item_id}/image?url=s3://bucket/secret.png",
                 "/items/..%2f..%2fetc/image"):  # fmt: skip
        console.client.get(path)
    assert set(console.fetcher.requested) <= {"s3://bucket/c1.png", "s3://bucket/c2.png"}
    assert console.client.get("/items/999/image").status_code == 403


def test_an_object_stored_as_html_never_reaches_the_browser_as_a_page(console):
    console.login("mo")
    taken = console.client.post("/next", data={"csrf_token": console.csrf(), "queue": "default"})
    item_id = int(str(taken.url).rsplit("/", 1)[1])
    for url in list(console.fetcher.objects):
        console.fetcher.objects[url] = b"<html><script>alert(1)</script></html>"
    response = console.client.get(f"/items/{item_id}/image")
    assert response.status_code == 502 and response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-content-type-options"] == "nosniff"


def test_deciding_with_the_keyboards_form_publishes_through_the_outbox_and_takes_the_next(console):
    console.login("mo")
    taken = console.client.post("/next", data={"csrf_token": console.csrf(), "queue": "default"})
    first = int(str(taken.url).rsplit("/", 1)[1])
    token = console.csrf(f"/items/{first}")
    decided = console.client.post(
        f"/items/{first}/decide",
        data={"csrf_token": token, "action": "uphold", "next": "1"},
        follow_redirects=False,
    )
    assert decided.status_code == 303 and decided.headers["location"].startswith("/items/")
    assert int(decided.headers["location"].rsplit("/", 1)[1]) != first
    with transaction(console.context.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Outbox)) == 1
        assert session.get(Item, first).status == "decided"


def test_an_overturn_without_a_reason_is_shown_back_with_the_reason_why(console):
    console.login("mo")
    taken = console.client.post("/next", data={"csrf_token": console.csrf(), "queue": "default"})
    item_id = int(str(taken.url).rsplit("/", 1)[1])
    response = console.client.post(
        f"/items/{item_id}/decide",
        data={"csrf_token": console.csrf(f"/items/{item_id}"), "action": "overturn"},
    )
    assert "overturning the model needs a reason" in response.text


def test_another_moderator_cannot_open_an_item_someone_holds(console):
    console.login("mo")
    taken = console.client.post("/next", data={"csrf_token": console.csrf(), "queue": "default"})
    item_id = int(str(taken.url).rsplit("/", 1)[1])
    console.login("mia")
    assert console.client.get(f"/items/{item_id}").status_code == 403
    assert console.client.get(f"/items/{item_id}/image").status_code == 403


def test_a_trusted_proxy_header_logs_in_only_from_a_trusted_address(tmp_path):
    from moderation_worker.review.settings import ReviewSettings

    review = ReviewSettings(
        database_url=f"sqlite:///{tmp_path / 'proxy.db'}",
        trusted_proxy_header="X-Forwarded-User",
        trusted_proxies=("10.9.0.0/16",),
    )
    console = build_console(tmp_path, review=review)
    try:
        # TestClient's peer address is "testclient": not a trusted proxy address
        assert (
            console.client.get("/", headers={"X-Forwarded-User": "lee"}, follow_redirects=False).status_code
            == 303
        )
    finally:
        console.client.close()
    opened = review.model_copy(
        update={"trusted_proxies": ("10.9.0.0/16",), "database_url": f"sqlite:///{tmp_path / 'open.db'}"}
    )
    proxied = build_console(tmp_path, review=opened)
    try:
        from fastapi.testclient import TestClient

        client = TestClient(proxied.client.app, base_url="http://127.0.0.1", client=("10.9.1.1", 5000))
        response = client.get("/", headers={"X-Forwarded-User": "lee"}, follow_redirects=False)
        assert response.status_code == 200 and "lee · lead" in response.text
        assert "mw_review_session" in response.headers.get("set-cookie", "")
        assert (
            client.get("/", headers={"X-Forwarded-User": "nobody"}, follow_redirects=False).status_code == 200
        )  # the cookie now
    finally:
        proxied.client.close()


def test_a_known_bad_verdict_shows_its_unscored_policies_as_not_scored(tmp_path):
    from moderation_worker.events import Decision, HashMatchInfo
    from moderation_worker.verdicts import hash_matched_verdicts

    from .factories import PACK, verdict
    from .web_fixtures import build_console

    matched = HashMatchInfo(list="known.csv", list_version="v1", label="known-bad", source="t",
                            policy="graphic_violence", distance=9)  # fmt: skip
    known_bad = verdict("known-bad-1", content_id="k1", image_url="s3://bucket/k1.png").model_copy(
        update={"policies": hash_matched_verdicts(PACK.policies, matched), "matched": matched,
                "decision": Decision.BLOCK}
    )  # fmt: skip
    console = build_console(tmp_path, verdicts=[known_bad])
    console.login("mo")
    page = console.client.post("/next", data={"csrf_token": console.csrf(), "queue": "default"})
    assert page.status_code == 200
    assert page.text.count("not scored") == len(PACK.policies) - 1
    assert "None" not in page.text
