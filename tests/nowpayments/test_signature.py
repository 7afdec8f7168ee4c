"""IPN signatures, checked byte for byte against what node itself produces."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptocheckout.nowpayments import signature as sigmod
from cryptocheckout.nowpayments.signature import (
    SIGNATURE_HEADER,
    InvalidIpnBody,
    canonical_ipn_body,
    canonical_json,
    check_ipn,
    js_number,
    parse_ipn_body,
    parse_js_json,
    sign_ipn,
    verify_ipn_signature,
)

SCRIPT = Path(__file__).with_name("js_reference.js")
SECRET = "k3y-For-IPN/secret+value"


class NodeReference:
    """One long-lived node process answering JSON requests line by line."""

    def __init__(self) -> None:
        node = shutil.which("node") or "/usr/bin/node"
        if not Path(node).exists():
            pytest.fail("node is required for the IPN signature tests and was not found")
        self._proc = subprocess.Popen(
            [node, str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def request(self, op: str, **fields: Any) -> list[Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        # ensure_ascii keeps lone surrogates intact on the way to node.
        self._proc.stdin.write(json.dumps({"op": op, **fields}, ensure_ascii=True) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            pytest.fail(f"node exited with {self._proc.wait()} without answering")
        response = json.loads(line)
        if "failure" in response:
            pytest.fail(f"node failed: {response['failure']}")
        results: list[Any] = response["results"]
        return results

    def bodies(self, texts: list[str], secret: str = SECRET) -> list[dict[str, str]]:
        return self.request("bodies", secret=secret, bodies=texts)

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=10)


@pytest.fixture(scope="module")
def node() -> Iterator[NodeReference]:
    reference = NodeReference()
    try:
        yield reference
    finally:
        reference.close()


def hmac_hex(message: bytes | str, secret: str = SECRET) -> str:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return hmac.new(secret.encode("utf-8"), data, hashlib.sha512).hexdigest()


# An IPN as NOWPayments sends it: keys sorted at every level, compact, numbers
# as JavaScript prints them, amounts sometimes strings and sometimes numbers.
IPN_BODY = (
    '{"actually_paid":0.000002,"actually_paid_at_fiat":0,"fee":{"currency":"btc",'
    '"depositFee":1.5e-7,"serviceFee":0.00000391,"withdrawalFee":0},'
    '"invoice_id":4581347815,"order_description":"Ebook \u2014 Caf\u00e9 / r\u00e9sum\u00e9",'
    '"order_id":"ord_01J8ZK3","outcome_amount":0.00118342,"outcome_currency":"btc",'
    '"parent_payment_id":null,"pay_address":"bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",'
    '"pay_amount":"0.00120931","pay_currency":"btc","payin_extra_id":null,'
    '"payment_extra_ids":null,"payment_id":5077125051,"payment_status":"finished",'
    '"price_amount":100,"price_currency":"usd","purchase_id":"5837122679",'
    '"updated_at":1727261282405}'
)

# The same notification before sorting, as a proxy might re-serialise it:
# nested keys in NOWPayments' natural order, pretty-printed, numbers re-spelled.
IPN_BODY_REFORMATTED = """{
  "payment_id": 5077125051,
  "payment_status": "finished",
  "pay_address": "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
  "price_amount": 100.0,
  "price_currency": "usd",
  "pay_amount": "0.00120931",
  "actually_paid": 2e-06,
  "actually_paid_at_fiat": 0,
  "pay_currency": "btc",
  "order_id": "ord_01J8ZK3",
  "order_description": "Ebook \\u2014 Caf\\u00e9 \\/ r\u00e9sum\u00e9",
  "purchase_id": "5837122679",
  "outcome_amount": 0.00118342,
  "outcome_currency": "btc",
  "payin_extra_id": null,
  "payment_extra_ids": null,
  "parent_payment_id": null,
  "invoice_id": 4581347815,
  "updated_at": 1.727261282405E12,
  "fee": {"currency": "btc", "depositFee": 1.5e-07, "withdrawalFee": 0, "serviceFee": 3.91e-6}
}"""

# (id, JSON text) pairs; node parses each text and is the judge.
BODY_CASES: list[tuple[str, str]] = [
    ("ipn", IPN_BODY),
    ("ipn-reformatted", IPN_BODY_REFORMATTED),
    (
        "ipn-with-arrays",
        '{"payment_id":1,"items":[{"sku":"b","qty":2,"price":9.99},{"qty":1,"sku":"a"}],'
        '"tags":["z","a",["n",{"y":1,"x":[]}]],"fee":{"serviceFee":0,"currency":"usdttrc20"}}',
    ),
    ("array-of-eleven", '{"a":[0,1,2,3,4,5,6,7,8,9,10],"b":[[1,2],[3,[4,[5]]]]}'),
    (
        "non-ascii",
        '{"ru":"Привет","ja":"日本語テキスト","de":"Grüße","ar":"مرحبا","é":"e","Ω":1,"z":"ǅ"}',
    ),
    (
        "slashes",
        '{"url":"https://example.com/a/b?c=d&e=<f>","esc":"\\/path\\/x","html":"</script>"}',
    ),
    ("line-separators", '{"ls":"a\\u2028b","ps":"c\\u2029d","raw":"x\u2028y\u2029z"}'),
    ("quotes-backslashes", r'{"q":"say \"hi\"","b":"C:\\dir\\file","mix":"\\\"\\\\"}'),
    (
        "controls",
        r'{"c":"\u0000\u0001\u0007\b\t\n\u000b\f\r\u000e\u001f\u007f\u0080\u009f","k\n":1}',
    ),
    (
        "lone-surrogates",
        r'{"hi":"\ud800","lo":"\udfff","rev":"\udc00\ud800","pair":"\ud83d\ude00"}',
    ),
    (
        "astral-vs-private-use-keys",
        '{"\ue000":1,"\U0001f600":2,"\uffff":3,"a":4,"\ud7ff":5,"\U00010000":6,"\ufb01":7,'
        '"\U0001f600a":8}',
    ),
    ("surrogate-escape-keys", r'{"\ud83d\ude00":1,"\ud83d":2,"\ude00":3,"\ue000":4}'),
    (
        "integer-like-keys",
        '{"b":1,"10":2,"2":3,"a":4,"01":5,"-1":6,"1.5":7,"0":8,"4294967294":9,'
        '"4294967295":10,"99999999999":11,"1e3":12," 1":13,"":14}',
    ),
    ("nested-integer-like-keys", '{"x":{"10":[{"3":1,"20":2}],"9":null}}'),
    (
        "numbers",
        '{"n":[1e-7,1.5e-7,0.000002,0.000001,1e-6,1e21,1e+21,123456789012345680000,'
        "123456789012345678901,1.7976931348623157e308,5e-324,2.2250738585072014e-308,0,-0,"
        "-0.0,100.0,1E2,20,2.5e-5,-1.5e-10,1e400,-1e400,9007199254740993,9007199254740992,"
        "0.1,0.30000000000000004,1e20,99999999999999990000,1.23e-5,-1e-7,123.456,1e-1,"
        "4.35,0.1e1,5e-7,1e-300,1234567.0,1.0000000000000002]}",
    ),
    ("integers", '{"i":[0,1,-1,42,2147483647,2147483648,-9007199254740991,4294967296]}'),
    ("null-bool-empty", '{"n":null,"t":true,"f":false,"o":{},"a":[],"oa":[{}],"aa":[[]]}'),
    ("falsy-values", '{"zero":0,"empty":"","no":false,"nil":null,"nested":{"z":0}}'),
    ("duplicate-keys", '{"a":1,"b":{"x":1,"x":2},"a":3}'),
    ("proto-keys", '{"__proto__":{"polluted":1},"a":{"__proto__":null,"b":1},"c":2}'),
    ("proto-primitive", '{"__proto__":5,"constructor":"c","toString":1,"hasOwnProperty":2}'),
    ("whitespace", ' \r\n\t{ "b" : [ 1 , 2 ] ,\n"a" : { } }\t\r\n '),
    ("deep", '{"d":' + '{"k":[' * 40 + "1" + "]}" * 40 + "}"),
    ("empty-object", "{}"),
    ("top-level-array", '[{"b":1,"a":2},3,"x"]'),
    ("top-level-string", '"text/\u2028"'),
    ("top-level-number", "1e-7"),
    ("top-level-null", "null"),
]

CASE_IDS = [case_id for case_id, _ in BODY_CASES]


@pytest.fixture(scope="module")
def node_bodies(node: NodeReference) -> dict[str, dict[str, str]]:
    results = node.bodies([text for _, text in BODY_CASES])
    by_id = dict(zip(CASE_IDS, results, strict=True))
    for case_id, result in by_id.items():
        assert "error" not in result, f"{case_id}: node could not parse: {result}"
    return by_id


def case_text(case_id: str) -> str:
    return dict(BODY_CASES)[case_id]


# --- numbers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.000002, "0.000002"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (20, "20"),
        (20.0, "20"),
        (100.0, "100"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456789012345678901, "123456789012345680000"),
        (-0.0, "0"),
        (0, "0"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (2**53 + 1, "9007199254740992"),
        (-(2**53) - 1, "-9007199254740992"),
        (10**400, "Infinity"),
        (-(10**400), "-Infinity"),
        (math.inf, "Infinity"),
        (math.nan, "NaN"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-1.5e-10, "-1.5e-10"),
        (123.456, "123.456"),
        (1.5e300, "1.5e+300"),
    ],
)
def test_js_number_known_values(value: int | float, expected: str) -> None:
    assert js_number(value) == expected


def _special_doubles() -> list[float]:
    values = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, 1.0]
    for exponent in range(-325, 310):
        base = float(f"1e{exponent}")
        values += [base, math.nextafter(base, 0), math.nextafter(base, math.inf)]
    for edge in (1e21, 1e-7, 1e-6, 2.0**53, 2.0**64, 1.5e-7):
        values += [edge, math.nextafter(edge, 0), math.nextafter(edge, math.inf), -edge]
    return values


def test_js_number_matches_node_on_many_doubles(node: NodeReference) -> None:
    rng = random.Random(20240925)
    bits = [struct.pack(">d", value).hex() for value in _special_doubles()]
    bits += [rng.getrandbits(64).to_bytes(8, "big").hex() for _ in range(20000)]
    # Doubles with short decimal forms are the common case in payment data.
    bits += [
        struct.pack(">d", rng.randint(-(10**9), 10**9) / 10 ** rng.randint(0, 12)).hex()
        for _ in range(5000)
    ]
    expected = node.request("doubles", bits=bits)
    mismatches = [
        (hex_bits, got, want)
        for hex_bits, want in zip(bits, expected, strict=True)
        if (got := js_number(struct.unpack(">d", bytes.fromhex(hex_bits))[0])) != want
    ]
    assert mismatches == []


def test_js_number_matches_node_on_integers(node: NodeReference) -> None:
    rng = random.Random(7)
    ints = [0, 1, -1, 2**53, 2**53 + 1, 2**53 + 3, 2**64, 10**21, 10**21 - 1, 10**308, 10**309]
    ints += [rng.randint(-(10**25), 10**25) for _ in range(2000)]
    ints += [rng.getrandbits(rng.randint(1, 1100)) for _ in range(500)]
    expected = node.request("numbers", texts=[str(i) for i in ints])
    assert [js_number(i) for i in ints] == expected


# --- canonical JSON against node ------------------------------------------


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_canonical_json_matches_node(case_id: str, node_bodies: dict[str, dict[str, str]]) -> None:
    assert canonical_json(parse_js_json(case_text(case_id))) == node_bodies[case_id]["canonical"]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_arrays_as_objects_matches_documented_helper(
    case_id: str, node_bodies: dict[str, dict[str, str]]
) -> None:
    parsed = parse_js_json(case_text(case_id))
    assert canonical_json(parsed, arrays_as_objects=True) == node_bodies[case_id]["helper"]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_sign_ipn_matches_node_hmac(case_id: str, node_bodies: dict[str, dict[str, str]]) -> None:
    expected = node_bodies[case_id]["canonical_sig"]
    assert sign_ipn(parse_js_json(case_text(case_id)), SECRET) == expected


def test_parsing_bytes_and_text_agree(node_bodies: dict[str, dict[str, str]]) -> None:
    for case_id, text in BODY_CASES:
        expected = node_bodies[case_id]["canonical"]
        assert canonical_json(parse_js_json(text.encode("utf-8"))) == expected, case_id


def test_realistic_ipn_is_already_canonical(node_bodies: dict[str, dict[str, str]]) -> None:
    assert node_bodies["ipn"]["canonical"] == IPN_BODY
    assert canonical_ipn_body(parse_js_json(IPN_BODY)) == IPN_BODY.encode("utf-8")
    assert canonical_json(parse_js_json(IPN_BODY_REFORMATTED)) == IPN_BODY


def test_python_values_serialise_like_parsed_ones() -> None:
    value = {
        "fee": {"withdrawalFee": 0, "currency": "btc", "depositFee": 1.5e-7},
        "payment_id": 5077125051,
        "big": 123456789012345678901,
        "tuple": (1, 2.0),
        "pair": "\ud83d\ude00",
        "\ud83d\ude00": "split key",
    }
    expected = (
        '{"big":123456789012345680000,"fee":{"currency":"btc","depositFee":1.5e-7,'
        '"withdrawalFee":0},"pair":"\U0001f600","payment_id":5077125051,'
        '"tuple":[1,2],"\U0001f600":"split key"}'
    )
    assert canonical_json(value) == expected


# --- property test against node -------------------------------------------

# Hypothesis never draws surrogates by itself, and astral characters rarely
# meet U+E000..U+FFFF in one object, so the characters that matter are mixed in.
_EDGE_CHARS = [
    "\ud800", "\udbff", "\udc00", "\udfff", "\ud83d", "\ude00", "\ue000", "\uffff",
    "\U00010000", "\U0001f600", "\U0010ffff", "\u2028", "\u2029", "\x00", "\x1f", "\x7f",
    '"', "\\", "/", "\u00e9", "0", "1",
]  # fmt: skip
_chars = st.characters(codec=None, exclude_categories=()) | st.sampled_from(_EDGE_CHARS)
_texts = st.text(_chars, max_size=12) | st.lists(st.sampled_from(_EDGE_CHARS), max_size=4).map(
    "".join
)
_keys = (
    _texts
    | st.integers(min_value=0, max_value=2**32 + 2).map(str)
    | st.sampled_from(["__proto__", "01", "-1", "1.0", "constructor", "4294967294", "4294967295"])
)
_numbers = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.integers(min_value=-1000, max_value=1000)
    | st.sampled_from([1e-7, 1.5e-7, 0.000002, 1e21, -0.0, 5e-324, 1.7976931348623157e308])
    | st.sampled_from([1e-7, 1e-6, 1e20, 1e21, 2.0**53, 1e16]).map(
        lambda x: math.nextafter(x, math.inf)
    )
    | st.sampled_from([1e-7, 1e-6, 1e21]).map(lambda x: math.nextafter(x, 0))
)
_scalars = st.none() | st.booleans() | _numbers | _texts
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(json_values, min_size=1, max_size=25), ensure_ascii=st.booleans())
def test_canonical_json_matches_node_for_generated_values(
    node: NodeReference, values: list[object], ensure_ascii: bool
) -> None:
    texts = [json.dumps(value, ensure_ascii=ensure_ascii) for value in values]
    results = node.bodies(texts)
    for value, text, result in zip(values, texts, results, strict=True):
        parsed = parse_js_json(text)
        assert canonical_json(parsed) == result["canonical"], text
        assert canonical_json(value) == result["canonical"], text
        assert canonical_json(parsed, arrays_as_objects=True) == result["helper"], text
        assert canonical_json(value, arrays_as_objects=True) == result["helper"], text


# --- verification -----------------------------------------------------------


def test_header_name() -> None:
    assert SIGNATURE_HEADER == "x-nowpayments-sig"


def test_real_body_verifies_on_raw_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    signature = hmac_hex(IPN_BODY)

    def must_not_parse(raw: bytes | str) -> object:
        raise AssertionError("a raw-bytes match must not parse the body")

    monkeypatch.setattr(sigmod, "parse_ipn_body", must_not_parse)
    assert verify_ipn_signature(IPN_BODY.encode(), signature, SECRET)


def test_reordered_and_respaced_body_still_verifies() -> None:
    signature = sign_ipn(parse_js_json(IPN_BODY), SECRET)
    assert signature == hmac_hex(IPN_BODY)
    assert verify_ipn_signature(IPN_BODY_REFORMATTED.encode(), signature, SECRET)
    shuffled = json.loads(IPN_BODY)
    reversed_body = json.dumps(dict(reversed(list(shuffled.items()))), indent=3)
    assert verify_ipn_signature(reversed_body.encode(), signature, SECRET)
    check = check_ipn(IPN_BODY_REFORMATTED.encode(), signature, SECRET)
    assert check.signature_valid and check.matched == "canonical"
    assert check.payload is not None and check.payload["payment_id"] == 5077125051


def _leaf_paths(value: object, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaf_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaf_paths(item, (*path, index))
    else:
        yield path


FLIP_BODY = json.loads(IPN_BODY) | {"items": [{"sku": "a", "qty": 1}, True, None, ""]}
FLIP_PATHS = list(_leaf_paths(FLIP_BODY))


def _flipped(value: object) -> object:
    if value is None:
        return 0
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    assert isinstance(value, str)
    return value + "x"


@pytest.mark.parametrize("path", FLIP_PATHS, ids=["/".join(map(str, p)) for p in FLIP_PATHS])
def test_every_changed_value_fails(path: tuple[Any, ...]) -> None:
    signature = sign_ipn(FLIP_BODY, SECRET)
    assert verify_ipn_signature(canonical_ipn_body(FLIP_BODY), signature, SECRET)
    changed = copy.deepcopy(FLIP_BODY)
    target: Any = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = _flipped(target[path[-1]])
    for body in (canonical_ipn_body(changed), json.dumps(changed, indent=1).encode()):
        assert not verify_ipn_signature(body, signature, SECRET)


def test_renamed_or_removed_keys_fail() -> None:
    signature = hmac_hex(IPN_BODY)
    renamed = IPN_BODY.replace('"order_id"', '"order_ID"').encode()
    removed = canonical_ipn_body({k: v for k, v in json.loads(IPN_BODY).items() if k != "fee"})
    added = canonical_ipn_body(json.loads(IPN_BODY) | {"extra": None})
    for body in (renamed, removed, added):
        assert not verify_ipn_signature(body, signature, SECRET)


def test_wrong_secret_fails() -> None:
    signature = hmac_hex(IPN_BODY)
    assert not verify_ipn_signature(IPN_BODY.encode(), signature, SECRET + "x")
    assert not verify_ipn_signature(IPN_BODY_REFORMATTED.encode(), signature, "other")


def test_secret_surrounding_whitespace_is_ignored() -> None:
    signature = hmac_hex(IPN_BODY)
    padded = f" \t{SECRET}\r\n"
    assert verify_ipn_signature(IPN_BODY.encode(), signature, padded)
    assert verify_ipn_signature(IPN_BODY_REFORMATTED.encode(), signature, padded)
    assert sign_ipn(parse_js_json(IPN_BODY), padded) == signature


def test_empty_secret_never_verifies() -> None:
    body = IPN_BODY.encode()
    for secret in ("", "  \n"):
        assert not verify_ipn_signature(body, hmac_hex(body, ""), secret)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "",
        " ",
        "not-hex",
        "g" * 128,
        "0" * 127,
        "0" * 129,
        "ab" * 32,  # an HMAC-SHA256 length
        "0x" + "0" * 126,
    ],
)
def test_missing_or_malformed_signature_fails(bad: str | None) -> None:
    assert not verify_ipn_signature(IPN_BODY.encode(), bad, SECRET)
    assert not check_ipn(IPN_BODY.encode(), bad, SECRET).signature_valid


def test_signature_case_and_surrounding_space_are_tolerated() -> None:
    signature = hmac_hex(IPN_BODY)
    assert verify_ipn_signature(IPN_BODY.encode(), signature.upper(), SECRET)
    assert verify_ipn_signature(IPN_BODY_REFORMATTED.encode(), signature.upper(), SECRET)
    assert verify_ipn_signature(IPN_BODY.encode(), f" {signature}\n", SECRET)


def test_one_changed_signature_digit_fails() -> None:
    signature = hmac_hex(IPN_BODY)
    for position in (0, 63, 127):
        digit = "1" if signature[position] != "1" else "2"
        tampered = signature[:position] + digit + signature[position + 1 :]
        assert not verify_ipn_signature(IPN_BODY.encode(), tampered, SECRET)


def test_documented_helper_signature_verifies(node_bodies: dict[str, dict[str, str]]) -> None:
    for case_id in ("ipn-with-arrays", "array-of-eleven", "proto-keys"):
        result = node_bodies[case_id]
        assert result["helper"] != result["canonical"]
        check = check_ipn(result["canonical"].encode(), result["helper_sig"], SECRET)
        assert check.signature_valid and check.matched == "arrays_as_objects", case_id
        check = check_ipn(case_text(case_id).encode(), result["canonical_sig"], SECRET)
        assert check.signature_valid and check.matched in {"raw", "canonical"}, case_id


def test_legacy_forms_differ_and_are_not_accepted(node: NodeReference) -> None:
    """Why neither NOWPayments' Python sample nor the top-level sort is used."""
    (reference,) = node.bodies([IPN_BODY_REFORMATTED])
    correct = reference["canonical_sig"]
    assert correct == hmac_hex(IPN_BODY)
    assert reference["canonical"] == IPN_BODY

    parsed = json.loads(IPN_BODY_REFORMATTED)
    python_sample = json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    assert "2e-06" in python_sample and "1.5e-07" in python_sample
    assert '"price_amount":100.0' in python_sample and "\\u2014" in python_sample
    top_level_only = json.dumps(
        {key: parsed[key] for key in sorted(parsed)}, separators=(",", ":"), ensure_ascii=False
    )
    assert '"fee":{"currency":"btc","depositFee":1.5e-07,"withdrawalFee":0,' in top_level_only
    # In JavaScript the top-level sort keeps the nested order, and the older
    # replacer-array form empties nested objects altogether.
    assert '"withdrawalFee":0,"serviceFee"' in reference["top_level"]
    assert '"fee":{}' in reference["replacer"]

    for legacy in (python_sample, top_level_only, reference["top_level"], reference["replacer"]):
        assert legacy != IPN_BODY
        legacy_signature = hmac_hex(legacy)
        assert legacy_signature != correct
        assert not verify_ipn_signature(IPN_BODY_REFORMATTED.encode(), legacy_signature, SECRET)
    assert verify_ipn_signature(IPN_BODY_REFORMATTED.encode(), correct, SECRET)
    assert verify_ipn_signature(IPN_BODY.encode(), correct, SECRET)


# --- bodies that are not JSON objects ---------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[1,2]",
        b'"text"',
        b"42",
        b"null",
        b"",
        b"{",
        b'{"a":1} x',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":"\xff"}',
        b'\xef\xbb\xbf{"a":1}',
        b"{'a':1}",
        b'{"a":01}',
        b'{"a":"tab\tinside"}',
    ],
)
def test_non_object_body_is_reported_apart_from_the_signature(body: bytes) -> None:
    with pytest.raises(InvalidIpnBody):
        parse_ipn_body(body)
    raw_signature = hmac_hex(body)
    check = check_ipn(body, raw_signature, SECRET)
    assert check.payload is None and check.error
    # The raw bytes were signed, so the signature itself is fine: answer 400.
    assert check.signature_valid and check.matched == "raw"
    assert verify_ipn_signature(body, raw_signature, SECRET)
    other = check_ipn(body, hmac_hex(b"{}"), SECRET)
    assert other.payload is None and not other.signature_valid
    assert not verify_ipn_signature(body, hmac_hex(b"{}"), SECRET)


def test_bad_signature_on_an_object_body_is_reported_with_its_payload() -> None:
    check = check_ipn(IPN_BODY.encode(), hmac_hex(IPN_BODY, "wrong"), SECRET)
    assert not check.signature_valid and check.matched is None
    assert check.payload is not None and check.error is None


# --- parsing ---------------------------------------------------------------


def test_parse_js_json_follows_json_parse() -> None:
    parsed = parse_js_json('{"a":1,"b":123456789012345678901,"c":-0,"a":2,"d":1e400,"e":[]}')
    assert parsed == {"a": 2.0, "b": 1.2345678901234568e20, "c": 0.0, "d": math.inf, "e": []}
    assert isinstance(parsed, dict)
    assert all(isinstance(parsed[k], float) for k in "abcd")
    assert math.copysign(1.0, parsed["c"]) == -1.0
    assert canonical_json(parsed) == '{"a":2,"b":123456789012345680000,"c":0,"d":null,"e":[]}'
    assert parse_js_json("1" * 5000) == math.inf


@pytest.mark.parametrize(
    "text", ["NaN", "[Infinity]", '{"a":-Infinity}', "[1,]", "", "\ufeff{}", '{"a" 1}']
)
def test_parse_js_json_rejects_what_json_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_js_json(text)


def test_parse_js_json_rejects_deep_nesting_with_value_error() -> None:
    with pytest.raises(ValueError, match="deep"):
        parse_js_json("[" * 100_000 + "]" * 100_000)
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    assert not verify_ipn_signature(deep, hmac_hex(b"x"), SECRET)


@pytest.mark.parametrize(
    "value", [{1: "int key"}, {"a": Decimal("1.5")}, {"a": {1, 2}}, {"a": b"bytes"}, object()]
)
def test_canonical_json_rejects_non_json_values(value: object) -> None:
    with pytest.raises(TypeError):
        canonical_json(value)
