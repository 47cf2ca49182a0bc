"""Auth plugins (token, jwt, origin) through wspipe_authenticate / wspipe_client_id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from wspipe_plugins.auth.jwt import JWTAuth
from wspipe_plugins.auth.origin import OriginAllowList
from wspipe_plugins.auth.token import TokenAuth

from wspipe_core import ConfigError, ProxyConfig, RequestInfo
from wspipe_core.testing import Harness

TOKENS = ["first-token-0123456789", "second-token-0123456789"]


def harness(name, table, **config):
    h = Harness(ProxyConfig(plugin_settings={name: table}, **config), plugins=[name])
    backend = h.backend("ws://b1:80/")
    return h, backend


def path(query=""):
    return f"/{uuid.uuid4()}" + (f"?{query}" if query else "")


# token


@pytest.mark.parametrize("headers,query", [
    ([("Authorization", f"Bearer {TOKENS[1]}")], ""),
    ([("authorization", f"bearer   {TOKENS[0]}")], ""),
    ([], f"access_token={TOKENS[0]}"),
    ([], f"a=1&access_token={TOKENS[1]}&b=2"),
])
def test_token_accepts_a_known_token_from_header_or_query(headers, query):
    h, backend = harness("token", {"tokens": TOKENS})
    client = h.client(path(query), headers=headers)
    assert client.accepted and client.status is None
    client.send("in")
    assert backend.messages() == ["in"]


@pytest.mark.parametrize("headers,query", [
    ([], ""),
    ([], "access_token="),
    ([("Authorization", "Basic dXNlcjpwYXNz")], ""),
    ([("Authorization", "Bearer")], ""),
])
def test_token_without_credentials_is_401(headers, query):
    h, backend = harness("token", {"tokens": TOKENS})
    client = h.client(path(query), headers=headers)
    assert client.status == 401 and not client.accepted
    assert client.body
    assert backend.links == []


@pytest.mark.parametrize("headers,query", [
    ([("Authorization", "Bearer wrong")], ""),
    ([("Authorization", f"Bearer {TOKENS[0]}x")], ""),
    ([], "access_token=wrong"),
    # The header is read first: a wrong header is not rescued by a right query.
    ([("Authorization", "Bearer wrong")], f"access_token={TOKENS[0]}"),
])
def test_token_with_a_wrong_token_is_403(headers, query):
    h, backend = harness("token", {"tokens": TOKENS})
    client = h.client(path(query), headers=headers)
    assert client.status == 403
    assert client.body.strip() == b"invalid token"
    assert backend.links == []


def test_token_api_key_header_and_no_query():
    h, _ = harness("token", {"tokens": TOKENS, "header": "x-api-key", "query_param": ""})
    assert h.client(path(), headers=[("X-API-Key", TOKENS[1])]).accepted
    assert h.client(path(f"access_token={TOKENS[1]}")).status == 401
    assert h.client(path(), headers=[("X-API-Key", "nope")]).status == 403


def test_token_from_a_file(tmp_path):
    file = tmp_path / "tokens"
    file.write_text("# ops team\nfile-token-0123456789\n\n")
    h, _ = harness("token", {"tokens_file": str(file)})
    assert h.client(path("access_token=file-token-0123456789")).accepted
    assert h.client(path("access_token=%23%20ops%20team")).status == 403


def test_token_is_not_forwarded_to_the_backend_in_the_query():
    h, backend = harness("token", {"tokens": TOKENS})
    h.client(f"/{uuid.uuid4()}?room=1&access_token={TOKENS[0]}")
    target = backend.links[0].request.target
    assert "access_token" not in target and "room=1" in target


def test_token_can_keep_the_query():
    h, backend = harness("token", {"tokens": TOKENS, "strip_query": False})
    h.client(f"/{uuid.uuid4()}?access_token={TOKENS[0]}")
    assert "access_token=" in backend.links[0].request.target


def test_token_compares_every_token():
    auth = TokenAuth(TOKENS)
    assert auth.matches(TOKENS[1]) and auth.matches(TOKENS[0])
    assert not auth.matches("x") and not auth.matches("")


@pytest.mark.parametrize("table,match", [
    ({}, "at least one"),
    ({"tokens": [""]}, "at least one"),
    ({"tokens": "abc", "extra": 1}, "unknown key"),
    ({"tokens": [1]}, "list of strings"),
    ({"tokens_file": "/nonexistent/tokens"}, "cannot read"),
])
def test_token_bad_settings_stop_start_up(table, match):
    with pytest.raises(ConfigError, match=match):
        harness("token", table)


# jwt

SECRET = "a-long-enough-hmac-secret-for-hs256-tests"


def hs256(claims, secret=SECRET):
    return jwt.encode(claims, secret, algorithm="HS256")


def claims(**extra):
    now = time.time()
    return {"sub": "user-1", "exp": now + 3600, "nbf": now - 1, **extra}


def bearer(token):
    return [("Authorization", f"Bearer {token}")]


def test_jwt_hs256_accepts_a_valid_token_in_header_or_query():
    h, backend = harness("jwt", {"secret": SECRET})
    assert h.client(path(), headers=bearer(hs256(claims()))).accepted
    assert h.client(path(f"access_token={hs256(claims())}")).accepted
    assert len(backend.links) == 2


def test_jwt_missing_token_is_401():
    h, _ = harness("jwt", {"secret": SECRET})
    assert h.client(path()).status == 401


# Tokens are made when the test runs (not at collection): their times are relative.
@pytest.mark.parametrize("make_token,reason", [
    (lambda: hs256(claims(exp=time.time() - 5)), b"token expired"),
    (lambda: hs256(claims(nbf=time.time() + 300)), b"token not yet valid (nbf)"),
    (lambda: hs256(claims(), secret="another-secret-of-sufficient-length-xx"),
     b"invalid token"),
    (lambda: hs256({"sub": "no-exp"}), b"invalid token"),
    (lambda: "not.a.jwt", b"invalid token"),
    (lambda: jwt.encode(claims(), SECRET * 2, algorithm="HS512"), b"invalid token"),
], ids=["expired", "nbf", "wrong-secret", "no-exp", "garbage", "wrong-alg"])
def test_jwt_invalid_tokens_are_403(make_token, reason):
    h, backend = harness("jwt", {"secret": SECRET})
    client = h.client(path(), headers=bearer(make_token()))
    assert client.status == 403
    assert client.body.startswith(reason)
    assert backend.links == []


def test_jwt_leeway_allows_clock_skew():
    h, _ = harness("jwt", {"secret": SECRET, "leeway": 30})
    assert h.client(path(), headers=bearer(hs256(claims(exp=time.time() - 5)))).accepted
    assert h.client(path(), headers=bearer(hs256(claims(nbf=time.time() + 5)))).accepted


def test_jwt_exp_and_nbf_use_the_plugins_clock():
    now = [1_000_000.0]
    auth = JWTAuth(SECRET.encode(), clock=lambda: now[0])
    token = hs256({"exp": 1_000_100, "nbf": 1_000_010})
    h = Harness(plugins=[auth])
    h.backend("ws://b1:80/")
    assert h.client(path(), headers=bearer(token)).body.strip() == b"token not yet valid (nbf)"
    now[0] = 1_000_050
    assert h.client(path(), headers=bearer(token)).accepted
    now[0] = 1_000_100
    assert h.client(path(), headers=bearer(token)).body.strip() == b"token expired"


@pytest.mark.parametrize("extra,ok", [
    ({"aud": "wss://chat", "iss": "https://auth"}, True),
    ({"aud": ["other", "wss://chat"], "iss": "https://auth"}, True),
    ({"aud": "wss://other", "iss": "https://auth"}, False),
    ({"iss": "https://auth"}, False),
    ({"aud": "wss://chat", "iss": "https://evil"}, False),
    ({"aud": "wss://chat"}, False),
])
def test_jwt_checks_audience_and_issuer(extra, ok):
    h, _ = harness("jwt", {"secret": SECRET, "audience": "wss://chat",
                           "issuer": "https://auth", "require": ["exp", "aud", "iss"]})
    client = h.client(path(), headers=bearer(hs256(claims(**extra))))
    assert client.accepted is ok
    assert client.status == (None if ok else 403)


def test_jwt_token_with_audience_is_refused_when_none_is_configured():
    h, _ = harness("jwt", {"secret": SECRET})
    assert h.client(path(), headers=bearer(hs256(claims(aud="x")))).status == 403


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_public(private, tmp_path, name):
    file = tmp_path / name
    file.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(file)


@pytest.mark.parametrize("alg,make_key", [
    ("RS256", rsa_key), ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
])
def test_jwt_public_key_algorithms_from_a_pem_file(alg, make_key, tmp_path):
    private = make_key()
    key_file = pem_public(private, tmp_path, "key.pem")
    h, _ = harness("jwt", {"algorithms": [alg], "public_key_file": key_file})
    good = jwt.encode(claims(), private, algorithm=alg)
    assert h.client(path(), headers=bearer(good)).accepted
    forged = jwt.encode(claims(), make_key(), algorithm=alg)
    assert h.client(path(), headers=bearer(forged)).status == 403
    expired = jwt.encode(claims(exp=time.time() - 1), private, algorithm=alg)
    assert h.client(path(), headers=bearer(expired)).body.strip() == b"token expired"


def test_jwt_public_key_cannot_be_used_as_an_hmac_secret(tmp_path):
    private = rsa_key()
    key_file = pem_public(private, tmp_path, "key.pem")
    h, _ = harness("jwt", {"algorithms": ["RS256"], "public_key_file": key_file})
    pem = Path(key_file).read_bytes()
    # The classic forgery: an HS256 token whose HMAC key is the (public) PEM.
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    signing_input = (b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + b"."
                     + b64(json.dumps(claims()).encode()))
    forged = signing_input + b"." + b64(hmac.new(pem, signing_input, hashlib.sha256).digest())
    client = h.client(path(), headers=bearer(forged.decode()))
    assert client.status == 403


def test_jwt_client_id_from_a_claim():
    h, backend = harness("jwt", {"secret": SECRET, "client_id_claim": "sid"})
    client = h.client("/chat", headers=bearer(hs256(claims(sid="session-42"))))
    assert client.accepted
    assert backend.links[0].header("x-wspipe-client-id") == "session-42"
    assert {p.client_id for p in h.proxy.pipes()} == {"session-42"}
    # The same session cannot be live twice.
    assert h.client("/chat", headers=bearer(hs256(claims(sid="session-42")))).status == 409


def test_jwt_client_id_claim_missing_falls_back_to_the_path():
    h, backend = harness("jwt", {"secret": SECRET, "client_id_claim": "sid"})
    client_id = str(uuid.uuid4())
    assert h.client(f"/{client_id}", headers=bearer(hs256(claims()))).accepted
    assert backend.links[0].header("x-wspipe-client-id") == client_id
    assert h.client("/chat", headers=bearer(hs256(claims()))).status == 400


@pytest.mark.parametrize("target", ["/chat", f"/{uuid.uuid4()}"])
def test_jwt_with_a_client_id_claim_still_answers_401_and_403(target):
    h, backend = harness("jwt", {"secret": SECRET, "client_id_claim": "sid"})
    expired = hs256(claims(sid="s", exp=time.time() - 1))
    assert h.client(target, headers=bearer(expired)).status == 403
    assert h.client(target).status == 401
    assert h.client(target, headers=[("Authorization", "Basic x")]).status == 401
    assert backend.links == [] and h.proxy.pipes() == []


def test_jwt_a_token_that_becomes_valid_between_the_two_hooks_is_still_refused():
    now = [1000.0]
    auth = JWTAuth(SECRET.encode(), client_id_claim="sid", clock=lambda: now[0])
    token = hs256({"sid": "s", "nbf": 1001, "exp": 2000})
    info = RequestInfo(target="/chat", path="/chat", query="", peer="127.0.0.1", tls=False,
                       headers=(("authorization", f"Bearer {token}"),), subprotocols=())
    client_id = auth.wspipe_client_id(info)
    assert client_id is not None and client_id.startswith("unauthenticated-")
    now[0] = 1001.5
    assert auth.wspipe_authenticate(info, client_id).status == 403
    assert auth.wspipe_authenticate(info, "s") is None


def test_jwt_names_the_subject_as_principal_so_only_it_resumes_a_parked_session():
    h, backend = harness("jwt", {"secret": SECRET}, resume_window=10)
    client_id = str(uuid.uuid4())
    alice = h.client(f"/{client_id}", headers=bearer(hs256(claims(sub="alice"))))
    alice.eof()  # a network blip: the session is parked
    backend.links[0].send("for alice")
    mallory = h.client(f"/{client_id}", headers=bearer(hs256(claims(sub="mallory"))))
    assert mallory.status == 403 and b"belongs to another principal" in mallory.body
    again = h.client(f"/{client_id}", headers=bearer(hs256(claims(sub="alice"))))
    assert again.accepted and again.received == ["for alice"] and len(backend.links) == 1


def test_jwt_principal_claim_can_be_turned_off():
    h, backend = harness("jwt", {"secret": SECRET, "principal_claim": ""}, resume_window=10)
    client_id = str(uuid.uuid4())
    h.client(f"/{client_id}", headers=bearer(hs256(claims(sub="alice")))).eof()
    again = h.client(f"/{client_id}", headers=bearer(hs256(claims(sub="bob"))))
    assert again.accepted and len(backend.links) == 1


@pytest.mark.parametrize("table,match", [
    ({}, "exactly one of secret or secret_file"),
    ({"secret": "s", "secret_file": "/x"}, "exactly one"),
    ({"algorithms": ["RS256"], "secret": "s"}, "public_key_file"),
    ({"algorithms": ["HS256", "RS256"], "secret": "s"}, "do not mix"),
    ({"algorithms": ["none"], "secret": "s"}, "choose from"),
    ({"algorithms": ["RS256"], "public_key_file": "/nonexistent.pem"}, "cannot read"),
    ({"secret": "s", "audiense": "x"}, "unknown key"),
])
def test_jwt_bad_settings_stop_start_up(table, match):
    with pytest.raises(ConfigError, match=match):
        harness("jwt", table)


def test_jwt_key_file_that_is_not_pem(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        harness("jwt", {"algorithms": ["ES256"], "public_key_file": str(bad)})


def test_jwt_secret_from_a_file(tmp_path):
    file = tmp_path / "secret"
    file.write_text(SECRET + "\n")
    h, _ = harness("jwt", {"secret_file": str(file)})
    assert h.client(path(), headers=bearer(hs256(claims()))).accepted


# origin


@pytest.mark.parametrize("origin,ok", [
    ("https://app.example.com", True),
    ("HTTPS://APP.EXAMPLE.COM", True),
    ("https://eu.example.com", True),
    ("https://a.b.example.com", True),
    ("https://example.com", False),
    ("http://eu.example.com", False),
    ("https://eu.example.com:8443", False),
    ("https://evil.com", False),
    ("https://example.com.evil.com", False),
    ("null", False),
])
def test_origin_allow_list(origin, ok):
    h, backend = harness("origin", {"allowed": ["https://app.example.com",
                                                "https://*.example.com"]})
    client = h.client(path(), headers=[("Origin", origin)])
    assert client.accepted is ok
    assert client.status == (None if ok else 403)
    assert len(backend.links) == (1 if ok else 0)


def test_origin_missing_is_403_unless_allowed():
    h, _ = harness("origin", {"allowed": ["https://app.example.com"]})
    assert h.client(path()).status == 403
    h, _ = harness("origin", {"allowed": ["https://app.example.com"], "allow_missing": True})
    assert h.client(path()).accepted


def test_origin_and_token_both_apply():
    config = ProxyConfig(plugin_settings={"origin": {"allowed": ["https://a.example"]},
                                          "token": {"tokens": TOKENS}})
    h = Harness(config, plugins=["origin", "token"])
    h.backend("ws://b1:80/")
    good = [("Origin", "https://a.example"), ("Authorization", f"Bearer {TOKENS[0]}")]
    assert h.client(path(), headers=good).accepted
    assert h.client(path(), headers=good[1:]).status == 403
    assert h.client(path(), headers=good[:1]).status == 401


def test_an_accept_naming_a_principal_does_not_skip_the_other_checks():
    config = ProxyConfig(plugin_settings={"origin": {"allowed": ["https://a.example"]},
                                          "jwt": {"secret": SECRET}})
    for plugins in (["origin", "jwt"], ["jwt", "origin"]):
        h = Harness(config, plugins=plugins)
        h.backend("ws://b1:80/")
        token = bearer(hs256(claims()))
        assert h.client(path(), headers=token).status == 403  # no Origin: still refused
        assert h.client(path(), headers=[("Origin", "https://a.example"), *token]).accepted


@pytest.mark.parametrize("allowed", [["app.example.com"], []])
def test_origin_bad_settings(allowed):
    with pytest.raises(ConfigError, match=r"\[plugins.origin\] allowed"):
        OriginAllowList(allowed)
