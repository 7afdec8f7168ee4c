"""NOWPayments IPN signatures, reproduced byte for byte.

NOWPayments signs each IPN (instant payment notification) with
``HMAC-SHA512(ipn_secret, message)`` and sends the lower-case hex digest in the
``x-nowpayments-sig`` header. The message is what JavaScript produces for the
body after sorting object keys recursively::

    JSON.stringify(sortKeysRecursively(JSON.parse(body)))

Reproducing that in Python takes more than ``json.dumps(sort_keys=True)``
(NOWPayments' own Python sample), which fails on real notifications:

* Numbers are JavaScript doubles printed by ECMAScript ``Number::toString``:
  ``0.000002`` (not ``2e-06``), ``1e-7``, ``1e+21``, ``100`` for ``100.0``,
  ``0`` for ``-0``, and integers above 2**53 lose digits
  (``123456789012345678901`` prints ``123456789012345680000``).
* Strings are written the ES2019 way: only ``"``, ``\\``, and controls below
  U+0020 are escaped, plus lone surrogates; non-ASCII, ``/`` and U+2028/U+2029
  stay literal.
* Keys sort by UTF-16 code units (astral characters sort before U+E000..U+FFFF).
* Objects list integer-like keys ("0".."4294967294") first in numeric order no
  matter how they were inserted, so ``{"10":..,"2":..,"a":..}`` prints "2", "10", "a".
* Nested objects (the ``fee`` object) are sorted too, which the older,
  top-level-only form of the documentation missed.

The verifier accepts a signature that matches any of: the raw body bytes (real
bodies already arrive sorted and compact), the canonical form above, or the form
NOWPayments' documented Node helper literally produces, which turns arrays into
objects keyed "0", "1", ... . Every candidate needs the secret, so accepting
several does not weaken the check.

Only the raw-bytes HMAC is cheap. The canonical forms are written in Python, so anyone
can make the server do that work with an unsigned body; it is tried only for bodies of at
most ``MAX_CANONICAL_BYTES`` with at most ``MAX_CANONICAL_NODES`` JSON values (a real
notification is about 1 KB and 40 values), and ``check_ipn(..., canonical=False)`` lets a
server budget it (the IPN endpoint gives it at most 10 % of its event loop).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring as _encode_basestring
from typing import Literal, NoReturn

__all__ = [
    "MAX_CANONICAL_BYTES",
    "MAX_CANONICAL_NODES",
    "SIGNATURE_HEADER",
    "InvalidIpnBody",
    "IpnCheck",
    "canonical_ipn_body",
    "canonical_json",
    "check_ipn",
    "js_number",
    "parse_ipn_body",
    "parse_js_json",
    "sign_ipn",
    "verify_ipn_signature",
]

SIGNATURE_HEADER = "x-nowpayments-sig"

Candidate = Literal["raw", "canonical", "arrays_as_objects"]

# Integers up to 2**53 are exact doubles, so their decimal digits are already
# what JavaScript prints; beyond that the double's own digits must be used.
_EXACT_INT_LIMIT = 2**53
# ECMAScript switches to exponent notation at 1e21 and below 1e-6 (n <= -6).
_PLAIN_UPPER = 21
_PLAIN_LOWER = -6
_MAX_ARRAY_INDEX = 2**32 - 2

_SURROGATE = re.compile("[\ud800-\udfff]")
_ARRAY_INDEX = re.compile("0|[1-9][0-9]{0,9}")
_HEX_SIGNATURE = re.compile("[0-9a-f]{128}")

# Beyond these, only the raw bytes are checked (see the module's docstring).
MAX_CANONICAL_BYTES = 16 * 1024
MAX_CANONICAL_NODES = 2000


class InvalidIpnBody(ValueError):
    """The body is not a JSON object as JavaScript's JSON.parse reads it."""


def js_number(value: int | float) -> str:
    """Return ECMAScript ``Number::toString`` of the double nearest to ``value``."""
    if isinstance(value, int):
        if -_EXACT_INT_LIMIT <= value <= _EXACT_INT_LIMIT:
            return str(int(value))
        try:
            value = float(value)
        except OverflowError:
            # JSON.parse of such digits yields an infinite double as well.
            value = math.inf if value > 0 else -math.inf
    if math.isnan(value):
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"  # Number::toString prints -0 as "0".
    if value.is_integer() and -_EXACT_INT_LIMIT <= value <= _EXACT_INT_LIMIT:
        return str(int(value))
    if value < 0:
        return "-" + _positive_js_number(-value)
    return _positive_js_number(value)


def _positive_js_number(value: float) -> str:
    # repr() yields the shortest digit string that round-trips, choosing the one
    # closest to the exact value, which is the digit string ECMAScript asks for;
    # only the layout around the decimal point differs.
    text = repr(value)
    if "e" not in text and not value.is_integer():
        return text  # 1e-4 <= value < 1e16 with a fraction: both write it the same way
    mantissa, _, exp_text = text.partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    stripped = digits.lstrip("0")
    # n is the ECMAScript exponent: value == 0.<digits> * 10**n.
    n = len(int_part) + (int(exp_text) if exp_text else 0) - (len(digits) - len(stripped))
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= _PLAIN_UPPER:
        return digits + "0" * (n - k)
    if 0 < n <= _PLAIN_UPPER:
        return digits[:n] + "." + digits[n:]
    if _PLAIN_LOWER < n <= 0:
        return "0." + "0" * -n + digits
    exponent = n - 1
    sign = "+" if exponent >= 0 else "-"
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{head}e{sign}{abs(exponent)}"


def _js_string_value(text: str) -> str:
    """Join surrogate halves stored as separate code points, as UTF-16 would."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "surrogatepass")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _quote(text: str) -> str:
    # The C encoder already escapes exactly what ES2019 JSON.stringify escapes,
    # with lower-case hex, apart from lone surrogates, which it leaves raw.
    if text.isascii() or _SURROGATE.search(text) is None:
        return _encode_basestring(text)
    return _SURROGATE.sub(_escape_surrogate, _encode_basestring(_js_string_value(text)))


def _utf16_key(key: str) -> bytes:
    # Big-endian code units compare bytewise in the same order as the units.
    return key.encode("utf-16-be", "surrogatepass")


def _is_array_index(key: str) -> bool:
    return _ARRAY_INDEX.fullmatch(key) is not None and int(key) <= _MAX_ARRAY_INDEX


def _js_key_order(keys: Iterable[str]) -> list[str]:
    """Order of ``Object.keys(obj).sort()`` once copied into a new object."""
    keys = list(keys)
    # ASCII keys compare the same as code points and as UTF-16 code units.
    ordered = sorted(keys) if all(key.isascii() for key in keys) else sorted(keys, key=_utf16_key)
    if not any(key[:1].isdigit() for key in ordered):
        return ordered
    indices = [key for key in ordered if _is_array_index(key)]
    if not indices:
        return ordered
    indices.sort(key=int)
    return indices + [key for key in ordered if not _is_array_index(key)]


def _object_items(value: dict[object, object]) -> dict[str, object]:
    items: dict[str, object] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"object keys must be str, not {type(key).__name__}")
        # Distinct Python keys can be one JavaScript key; as in JSON.parse the
        # later value wins.
        items[key if key.isascii() else _js_string_value(key)] = item
    return items


def _write(value: object, arrays_as_objects: bool, out: list[str]) -> None:
    kind = type(value)
    # The types json.loads produces, by exact type first: this runs once per JSON value.
    if kind is str:
        out.append(_quote(value))  # type: ignore[arg-type]
    elif kind is float:
        # JSON.stringify writes non-finite numbers as null.
        out.append(js_number(value) if math.isfinite(value) else "null")  # type: ignore[arg-type]
    elif kind is dict:
        _write_object(value, arrays_as_objects, out)  # type: ignore[arg-type]
    elif kind is list:
        _write_array(value, arrays_as_objects, out)  # type: ignore[arg-type]
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, int | float):
        out.append(js_number(value) if isinstance(value, int) or math.isfinite(value) else "null")
    elif isinstance(value, dict):
        _write_object(value, arrays_as_objects, out)
    elif isinstance(value, list | tuple):
        _write_array(value, arrays_as_objects, out)
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def _write_object(value: dict[object, object], arrays_as_objects: bool, out: list[str]) -> None:
    items = _object_items(value)
    if arrays_as_objects:
        # The documented helper assigns with `r[k] = ...`, so "__proto__"
        # hits the prototype setter instead of becoming a property.
        items.pop("__proto__", None)
    _write_members(items, arrays_as_objects, out)


def _write_array(
    value: list[object] | tuple[object, ...], arrays_as_objects: bool, out: list[str]
) -> None:
    if not value:
        out.append("{}" if arrays_as_objects else "[]")
        return
    if arrays_as_objects:
        # Keys "0", "1", ... are array indices, which objects list first in numeric
        # order: the order of the array itself.
        out.append("{")
        for i, item in enumerate(value):
            out.append(f'"{i}":' if i == 0 else f',"{i}":')
            _write(item, True, out)
        out.append("}")
        return
    out.append("[")
    for i, item in enumerate(value):
        if i:
            out.append(",")
        _write(item, False, out)
    out.append("]")


def _write_members(items: dict[str, object], arrays_as_objects: bool, out: list[str]) -> None:
    if not items:
        out.append("{}")
        return
    out.append("{")
    for i, key in enumerate(_js_key_order(items)):
        if i:
            out.append(",")
        out.append(_quote(key))
        out.append(":")
        _write(items[key], arrays_as_objects, out)
    out.append("}")


def canonical_json(value: object, *, arrays_as_objects: bool = False) -> str:
    """Return ``JSON.stringify`` of ``value`` with object keys sorted recursively.

    With ``arrays_as_objects`` arrays become objects keyed "0", "1", ..., as the
    helper in NOWPayments' documentation produces. Raises ``TypeError`` for
    values that are not JSON (``str`` keys; ``dict``, ``list``, ``tuple``, ``str``,
    ``int``, ``float``, ``bool`` and ``None`` values).
    """
    out: list[str] = []
    _write(value, arrays_as_objects, out)
    return "".join(out)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def parse_js_json(raw: bytes | str) -> object:
    """Parse JSON with ``JSON.parse`` semantics; raise ``ValueError`` if it is not JSON.

    Every number becomes a ``float`` (a double, as in JavaScript), bytes must be
    UTF-8 without a byte-order mark, and NaN/Infinity literals are rejected.
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text, parse_float=float, parse_int=float, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def parse_ipn_body(raw_body: bytes | str) -> dict[str, object]:
    """Parse an IPN body, raising ``InvalidIpnBody`` unless it is a JSON object."""
    try:
        payload = parse_js_json(raw_body)
    except ValueError as exc:
        raise InvalidIpnBody(f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidIpnBody(f"body is a JSON {type(payload).__name__}, not an object")
    return payload


def _key(secret: str) -> bytes:
    return secret.strip().encode("utf-8")


def _hmac_hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha512).hexdigest()


def canonical_ipn_body(payload: object) -> bytes:
    """Return the bytes NOWPayments signs for ``payload``; a sandbox POSTs these."""
    return canonical_json(payload).encode("utf-8")


def sign_ipn(payload: object, secret: str) -> str:
    """Return the ``x-nowpayments-sig`` value for a parsed JSON ``payload``."""
    return _hmac_hex(_key(secret), canonical_ipn_body(payload))


def _normalise_signature(signature: str | None) -> str | None:
    if not signature:
        return None
    candidate = signature.strip().lower()
    return candidate if _HEX_SIGNATURE.fullmatch(candidate) else None


def _shape(payload: object, limit: int) -> tuple[int, bool]:
    """The number of JSON values in ``payload`` (counting stops past ``limit``), and
    whether the arrays-as-objects form can differ from the canonical one."""
    count = 0
    differs = False
    stack = [payload]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            differs = differs or "__proto__" in value
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            differs = True
            stack.extend(value)
    return count, differs


def _match_parsed(
    payload: dict[str, object], key: bytes, signature: str, *, arrays: bool
) -> Candidate | None:
    try:
        canonical = canonical_json(payload).encode("utf-8")
        as_objects = (
            canonical_json(payload, arrays_as_objects=True).encode("utf-8") if arrays else canonical
        )
    except RecursionError:
        return None
    # Compare both so timing does not reveal which form was closer.
    canonical_ok = hmac.compare_digest(_hmac_hex(key, canonical), signature)
    as_objects_ok = hmac.compare_digest(_hmac_hex(key, as_objects), signature)
    if canonical_ok:
        return "canonical"
    if as_objects_ok:
        return "arrays_as_objects"
    return None


@dataclass(frozen=True, slots=True)
class IpnCheck:
    """Outcome of checking one IPN request.

    ``signature_valid`` False means a bad signature (answer 401). Otherwise ``payload``
    is None when the body is not a JSON object (answer 400). A body whose signature does
    not match its raw bytes is parsed only if it is small enough for the canonical
    forms. Numbers in ``payload`` are floats, as JavaScript sees them; parse the raw
    body again with ``decimal.Decimal`` where exact amounts matter.

    ``canonical_pending`` is True when ``check_ipn(..., canonical=False)`` stopped because
    the raw bytes did not match a well-formed signature and the body is small enough for
    the canonical forms: nothing was parsed; check again with ``canonical=True``.
    """

    signature_valid: bool
    payload: dict[str, object] | None
    matched: Candidate | None
    error: str | None = None
    canonical_pending: bool = False
    # For a signature that did not match the raw bytes: the canonical forms were "tried",
    # or skipped ("skipped_size", "skipped_values"). The caller counts it.
    canonical: str | None = None


def check_ipn(
    raw_body: bytes, signature: str | None, secret: str, *, canonical: bool = True
) -> IpnCheck:
    """Verify ``signature`` and parse ``raw_body``.

    The raw bytes are checked first. Only when they do not match, and the body is at most
    ``MAX_CANONICAL_BYTES`` with at most ``MAX_CANONICAL_NODES`` JSON values, are the
    canonical forms written and checked. With ``canonical`` False the check stops before
    parsing such a body (see ``IpnCheck.canonical_pending``), so that the caller can
    budget the rest.
    """
    sig = _normalise_signature(signature)
    key = _key(secret)
    # An empty secret would let anyone sign; treat it as "cannot verify".
    usable = sig is not None and bool(key)
    raw_ok = usable and hmac.compare_digest(_hmac_hex(key, raw_body), sig or "")
    if not raw_ok and len(raw_body) > MAX_CANONICAL_BYTES:
        skipped = "skipped_size" if usable else None
        return IpnCheck(False, None, None, "unsigned body too large to parse", canonical=skipped)
    if not raw_ok and not canonical:
        # Everything from here on (parsing included) is work an unsigned body can cause.
        return IpnCheck(False, None, None, canonical_pending=usable)
    try:
        payload: dict[str, object] | None = parse_ipn_body(raw_body)
        error = None
    except InvalidIpnBody as exc:
        payload, error = None, str(exc)
    if raw_ok:
        return IpnCheck(True, payload, "raw", error)
    if sig is None or not key or payload is None:
        return IpnCheck(False, payload, None, error)
    values, arrays = _shape(payload, MAX_CANONICAL_NODES)
    if values > MAX_CANONICAL_NODES:
        return IpnCheck(False, payload, None, error, canonical="skipped_values")
    matched = _match_parsed(payload, key, sig, arrays=arrays)
    return IpnCheck(matched is not None, payload, matched, error, canonical="tried")


def verify_ipn_signature(raw_body: bytes, signature: str | None, secret: str) -> bool:
    """Tell whether ``signature`` is a valid NOWPayments signature of ``raw_body``.

    False for a missing, empty or malformed signature and for an empty secret, and for
    a body signed only in a canonical form when it is over the limits of ``check_ipn``.
    The body is parsed only when the signature does not match the raw bytes.
    """
    sig = _normalise_signature(signature)
    key = _key(secret)
    if sig is None or not key:
        return False
    if hmac.compare_digest(_hmac_hex(key, raw_body), sig):
        return True
    return check_ipn(raw_body, signature, secret).signature_valid
