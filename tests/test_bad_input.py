"""No malformed request gets a 5xx: every error is a problem+json 4xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_TOKEN, Admin

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

RAW_BODIES: list[tuple[str, bytes, int]] = [
    ("not json", b"{not json", 400),
    ("empty", b"", 422),
    ("array", b"[]", 422),
    ("string", b'"hello"', 422),
    ("null", b"null", 422),
    ("number", b"12", 422),
    # Python's JSON reader takes NaN; the field validation still refuses it.
    ("nan", b'{"email": NaN, "items": []}', 422),
    ("invalid utf-8", b'{"email": "\xff\xfe", "items": []}', 400),
    (
        "lone surrogate",
        b'{"email": "a\\ud800@example.com", "items": [{"product_id": "\\udfff", "quantity": 1}]}',
        422,
    ),
    (
        "nul byte",
        b'{"email": "a\\u0000@example.com", "items": [{"product_id": "x\\u0000", "quantity": 1}]}',
        422,
    ),
    # Over Python's 4300-digit limit for integers: the body cannot be read as JSON.
    (
        "huge int",
        b'{"email": "a@example.com", "items": [{"product_id": "x", "quantity": 1'
        + b"0" * 5000
        + b"}]}",
        400,
    ),
    (
        "huge float",
        b'{"email": "a@example.com", "items": [{"product_id": "x", "quantity": 1e400}]}',
        422,
    ),
    (
        "float quantity",
        b'{"email": "a@example.com", "items": [{"product_id": "x", "quantity": 1.5}]}',
        422,
    ),
    (
        "string quantity",
        b'{"email": "a@example.com", "items": [{"product_id": "x", "quantity": "1"}]}',
        422,
    ),
    (
        "bool quantity",
        b'{"email": "a@example.com", "items": [{"product_id": "x", "quantity": true}]}',
        422,
    ),
    (
        "zero quantity",
        b'{"email": "a@example.com", "items": [{"product_id": "x", "quantity": 0}]}',
        422,
    ),
    (
        "quantity 101",
        b'{"email": "a@example.com", "items": [{"product_id": "x", "quantity": 101}]}',
        422,
    ),
    ("no items", b'{"email": "a@example.com", "items": []}', 422),
    ("items not list", b'{"email": "a@example.com", "items": {"product_id": "x"}}', 422),
    (
        "51 items",
        json.dumps(
            {"email": "a@example.com", "items": [{"product_id": "x", "quantity": 1}] * 51}
        ).encode(),
        422,
    ),
    ("missing email", b'{"items": [{"product_id": "x", "quantity": 1}]}', 422),
    ("bad email", b'{"email": "not-an-email", "items": [{"product_id": "x", "quantity": 1}]}', 422),
    (
        "email with newline",
        b'{"email": "a@example.com\\nBcc: x@evil.test", "items": [{"product_id": "x", "quantity": 1}]}',
        422,
    ),
    (
        "rtl override email",
        '{"email": "a\u202e@example.com", "items": [{"product_id": "x", "quantity": 1}]}'.encode(),
        422,
    ),
    (
        "very long email",
        json.dumps(
            {"email": "a" * 400 + "@example.com", "items": [{"product_id": "x", "quantity": 1}]}
        ).encode(),
        422,
    ),
    # Deeper than the JSON reader's recursion limit: unreadable, so 400.
    ("deep nesting", b'{"email": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    (
        "product id number",
        b'{"email": "a@example.com", "items": [{"product_id": 12, "quantity": 1}]}',
        422,
    ),
    (
        "product id unicode",
        '{"email": "a@example.com", "items": [{"product_id": "\u0661\u0662-\U0001f4a9", "quantity": 1}]}'.encode(),
        422,
    ),
]


@pytest.mark.parametrize(("name", "body", "status"), RAW_BODIES, ids=[c[0] for c in RAW_BODIES])
async def test_malformed_order_bodies(
    client: httpx.AsyncClient, name: str, body: bytes, status: int
) -> None:
    response = await client.post(
        "/api/orders", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, (name, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert problem["status"] == status


async def test_non_json_content_type_is_a_4xx(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/orders",
        content=b"email=a@example.com",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    body = b'{"email": "a@example.com", "items": [], "pad": "' + b"x" * 70_000 + b'"}'
    response = await client.post(
        "/api/orders", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_oversized_streamed_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(100):
            yield b"x" * 1024

    response = await client.post(
        "/api/orders", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


async def test_unknown_routes_and_methods_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = await client.delete("/api/products")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == "application/problem+json"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
order_like = st.fixed_dictionaries(
    {},
    optional={
        "email": json_values | st.emails(),
        "items": st.lists(
            st.fixed_dictionaries(
                {}, optional={"product_id": json_values, "quantity": json_values}
            ),
            max_size=3,
        )
        | json_values,
        "extra": json_values,
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=order_like)
async def test_fuzzed_order_bodies_never_5xx(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/api/orders", json=body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"


product_like = st.fixed_dictionaries(
    {},
    optional={
        "sku": json_values | st.from_regex(r"\A[A-Z0-9-]{1,10}\Z"),
        "name": json_values,
        "price": json_values | st.decimals(allow_nan=False, allow_infinity=False).map(str),
        "currency": json_values | st.sampled_from(["USD", "eur", "btc", "X"]),
        "active": json_values,
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=product_like)
async def test_fuzzed_product_bodies_never_5xx(
    client: httpx.AsyncClient, admin: Admin, body: dict[str, Any]
) -> None:
    response = await client.post("/api/admin/products", json=body, headers=ADMIN)
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        patched = await client.patch(
            f"/api/admin/products/{response.json()['id']}", json=body, headers=ADMIN
        )
        assert patched.status_code < 500, patched.text
