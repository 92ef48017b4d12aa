"""Check, Envoy's Check and health fuzzed over a real channel, with a default client's limits.

One server (see fuzz_model.seeded_fuzz) serves every example, and every call is held to what
fuzz_model says each call must satisfy. Check, Envoy's Check included, answers what the
decision table says for the model's entries, with a code, HTTP status and reason that agree; a
malformed Check is refused naming the field; health answers for the services served.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator, Sequence

import pytest
import strategies as fuzzed
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from grpc_health.v1 import health_pb2
from hypothesis import event, given
from hypothesis import strategies as st
from strategies import VALID_TOKENS, draw_fields, pick

from authz.v1 import authz_pb2 as pb
from authz_service.core.rules import permission_problem, plugin_problem
from fuzz_model import (
    ECHO_CHARS,
    FORBIDDEN_REASONS,
    INVALID,
    NOT_FOUND,
    OK,
    REFUSED,
    TIMEOUT,
    UNAUTHENTICATED_REASONS,
    Answer,
    Expected,
    Fuzz,
    Refused,
    answer_of,
    fuzz_settings,
    number,
    seeded_fuzz,
    strings_of,
    token_parts,
    without,
)

ENVOY_METHOD_ACTIONS = {
    "GET": pb.READ,
    "HEAD": pb.READ,
    "OPTIONS": pb.READ,
    "POST": pb.CREATE,
    "PUT": pb.UPDATE,
    "PATCH": pb.UPDATE,
    "DELETE": pb.DELETE,
}
ENVOY_ACTION_NAMES = {
    "create": pb.CREATE,
    "read": pb.READ,
    "update": pb.UPDATE,
    "delete": pb.DELETE,
}
SERVED = (
    "",
    "authz.v1.AuthzService",
    "authz.v1.AdminService",
    "envoy.service.auth.v3.Authorization",
)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    """This module's server and its model (see fuzz_model.seeded_fuzz)."""
    yield from seeded_fuzz(tmp_path_factory)


# -- Check ------------------------------------------------------------------------------------


@st.composite
def credentials(draw: st.DrawFn, known: Sequence[str]) -> tuple[str, str]:
    """(token, authorization): raw, as a header with any scheme and spacing, both, neither."""
    token = pick(draw, known) if draw(st.booleans()) else draw(fuzzed.tokens())
    form = draw(CREDENTIAL_FORMS)
    if form == "raw":
        return token, ""
    if form == "header":
        return "", f"{draw(SCHEMES)}{draw(SPACINGS)}{token}"
    if form == "both":
        return token, f"Bearer {token}"
    if form == "no scheme":
        return "", token
    if form == "odd":
        return "", draw(fuzzed.odd_text())
    return "", form


@st.composite
def good_credentials(draw: st.DrawFn, known: Sequence[str]) -> tuple[str, str]:
    """A known token, raw or as a Bearer header."""
    token = pick(draw, known)
    if draw(st.booleans()):
        return token, ""
    return "", f"{draw(st.sampled_from(['Bearer', 'bearer', 'BEARER']))} {token}"


KNOWN_PLUGINS = st.sampled_from(["catalog", "scaffolder", "events", "authz", "tech-insights"])
KNOWN_PERMISSIONS = st.sampled_from(
    [
        "",
        "",
        "catalog.entity.read",
        "catalog.entity.delete",
        "events.publish",
        *fuzzed.ADMIN_PERMISSIONS,
    ]
)
SCHEMES = st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Bearer:", "Token"])
SPACINGS = st.sampled_from([" ", " ", "  ", " \t", "\t"])
CREDENTIAL_FORMS = st.sampled_from(
    ["raw", "raw", "header", "header", "both", "no scheme", "odd", "", "Bearer", "Bearer "]
)


@fuzz_settings(400)
@given(data=st.data())
def test_check_answers_what_the_decision_table_says_with_consistent_codes(
    fuzz: Fuzz, data: st.DataObject
) -> None:
    known = sorted(fuzz.holders)
    fields = data.draw(
        st.composite(draw_fields)(
            {
                "credentials": (good_credentials(known), credentials(known)),
                "plugin": (KNOWN_PLUGINS, fuzzed.plugins()),
                "permission": (KNOWN_PERMISSIONS, st.just("") | fuzzed.permissions()),
                "action": (st.integers(0, 4), fuzzed.actions()),
            }
        ),
        label="request",
    )
    token, authorization = fields["credentials"]
    plugin, permission, action = fields["plugin"], fields["permission"], fields["action"]
    request = pb.CheckRequest(
        token=token,
        authorization=authorization,
        plugin=plugin,
        permission=permission,
        action=action,
    )
    outcome = fuzz.call(
        "Check",
        lambda: fuzz.server.authz.Check(request, timeout=TIMEOUT),
        without(request, "token", "authorization"),
        [token, *token_parts(authorization)],
    )
    expected = fuzz.expect_check(token, authorization, plugin, permission, action)
    if isinstance(expected, Refused):
        assert outcome.code == INVALID, outcome
        return
    assert outcome.code == OK, outcome
    answer = answer_of(outcome.response)
    event(answer.reason or "ALLOW")
    if expected is not None:
        assert answer == expected


@st.composite
def refused_checks(draw: st.DrawFn, known: Sequence[str]) -> pb.CheckRequest:
    """A Check with a good token, raw or in a header, and exactly one malformed field."""
    token = pick(draw, known) if draw(st.booleans()) else draw(VALID_TOKENS)
    request = pb.CheckRequest(
        plugin=draw(KNOWN_PLUGINS),
        permission=draw(KNOWN_PERMISSIONS),
        action=number(draw(st.integers(0, 4))),
    )
    fault = draw(st.sampled_from(["plugin", "permission", "action", "both"]))
    if fault == "plugin":
        request.plugin = draw(fuzzed.plugins().filter(lambda p: plugin_problem(p) is not None))
    elif fault == "permission":
        request.permission = draw(
            fuzzed.permissions().filter(lambda p: p != "" and permission_problem(p) is not None)
        )
    elif fault == "action":
        request.action = number(draw(fuzzed.actions().filter(lambda a: not 0 <= a <= 4)))
    if fault == "both":
        request.token, request.authorization = token, f"Bearer {token}"
    elif draw(st.booleans()):
        request.token = token
    else:
        request.authorization = f"{draw(SCHEMES)} {token}"
    return request


@fuzz_settings(100)
@given(data=st.data())
def test_a_malformed_check_is_refused_naming_the_field_and_never_echoes_the_token(
    fuzz: Fuzz, data: st.DataObject
) -> None:
    request = data.draw(refused_checks(sorted(fuzz.holders)), label="request")
    outcome = fuzz.call(
        "Check",
        lambda: fuzz.server.authz.Check(request, timeout=TIMEOUT),
        without(request, "token", "authorization"),
        [request.token, *token_parts(request.authorization)],
    )
    assert outcome.code == INVALID, outcome


# -- Envoy's Check ----------------------------------------------------------------------------


@st.composite
def envoy_requests(draw: st.DrawFn, known: Sequence[str]) -> external_auth_pb2.CheckRequest:
    """A request as Envoy's ext_authz filter sends it, with any route extensions and headers."""
    fields = draw_fields(
        draw,
        {
            "route": (good_routes(), odd_routes()),
            "headers": (good_credentials(known).map(_as_header), odd_headers(known)),
            "method": (
                st.sampled_from(sorted(ENVOY_METHOD_ACTIONS)),
                st.sampled_from(["get", "Post", "TRACE", "CONNECT", "PROPFIND", ""])
                | fuzzed.odd_text(huge=False),
            ),
        },
    )
    headers, header_map = fields["headers"]
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method=fields["method"],
        headers=headers,
        header_map=base_pb2.HeaderMap(headers=header_map),
        host=draw(fuzzed.odd_text()),
        path=draw(fuzzed.odd_text()),
    )
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http),
            context_extensions=fields["route"],
        )
    )


Headers = tuple[dict[str, str], list[base_pb2.HeaderValue]]


def _as_header(credential: tuple[str, str]) -> Headers:
    token, authorization = credential
    return {"authorization": authorization or f"Bearer {token}"}, []


@st.composite
def good_routes(draw: st.DrawFn) -> dict[str, str]:
    """context_extensions of a well-configured route."""
    route = {"plugin": draw(KNOWN_PLUGINS.filter(lambda p: p != "tech-insights"))}
    if permission := draw(KNOWN_PERMISSIONS):
        route["permission"] = permission
    if draw(st.booleans()):
        route["action"] = draw(st.sampled_from(["create", "read", "update", "delete", "READ"]))
    if draw(st.booleans()):
        route["forward_authorization"] = draw(st.sampled_from(["true", "false", "True"]))
    return route


@st.composite
def odd_routes(draw: st.DrawFn) -> dict[str, str]:
    """context_extensions with any keys and values, the four the service reads among them."""
    names = {
        "plugin": fuzzed.plugins(huge=False),
        "permission": fuzzed.permissions(huge=False),
        "action": st.sampled_from(["create", "READ", "Update", "delete", "erase", ""])
        | fuzzed.odd_text(huge=False),
        "forward_authorization": st.sampled_from(["true", "false", "TRUE", "yes", ""])
        | fuzzed.odd_text(huge=False),
    }
    route = draw(
        st.dictionaries(fuzzed.odd_text(huge=False), fuzzed.odd_text(huge=False), max_size=2)
    )
    for name, values in names.items():
        if draw(st.booleans()) or (name == "plugin" and draw(st.booleans())):
            route[name] = draw(values)
    return route


@st.composite
def odd_headers(draw: st.DrawFn, known: Sequence[str]) -> Headers:
    """Any headers, in `headers` or `header_map`, the authorization one anywhere or nowhere."""
    _, authorization = draw(credentials(known))
    headers = draw(st.dictionaries(fuzzed.header_names(), fuzzed.odd_text(huge=False), max_size=3))
    header_map = draw(
        st.lists(
            st.builds(
                base_pb2.HeaderValue,
                key=fuzzed.header_names(),
                value=fuzzed.odd_text(huge=False),
                raw_value=st.binary(max_size=40),
            ),
            max_size=2,
        )
    )
    where = draw(st.sampled_from(["headers", "value", "raw_value", "nowhere"]))
    if where == "headers":
        headers["authorization"] = authorization
    elif where == "value":
        header_map.append(base_pb2.HeaderValue(key="authorization", value=authorization))
    elif where == "raw_value":
        header_map.append(
            base_pb2.HeaderValue(key="Authorization", raw_value=authorization.encode())
        )
    return headers, header_map


def envoy_authorization(http: attribute_context_pb2.AttributeContext.HttpRequest) -> str:
    """The authorization header, from `headers` or (encode_raw_headers) `header_map`."""
    value = http.headers.get("authorization", "")
    if value:
        return str(value)
    for header in http.header_map.headers:
        if header.key.lower() == "authorization":
            return str(header.raw_value.decode("utf-8", "replace") or header.value)
    return ""


def expect_envoy(model: Fuzz, request: external_auth_pb2.CheckRequest) -> tuple[Expected, bool]:
    """What the route and the decision table say, and whether the route forwards the header."""
    extensions = request.attributes.context_extensions
    http = request.attributes.request.http
    plugin = extensions.get("plugin", "")
    named = extensions.get("action", "")
    flag = extensions.get("forward_authorization", "")
    action = (
        ENVOY_ACTION_NAMES.get(named.lower())
        if named
        else ENVOY_METHOD_ACTIONS.get(http.method.upper(), 0)
    )
    forward = {"true": True, "false": False}.get(flag.lower()) if flag else False
    if not plugin or action is None or forward is None:
        return REFUSED, False
    permission = extensions.get("permission", "")
    return model.expect_check("", envoy_authorization(http), plugin, permission, action), forward


def envoy_answer(response: external_auth_pb2.CheckResponse, forward: bool) -> Answer | Refused:
    """The answer an Envoy CheckResponse gives, once its parts are shown to agree."""
    if response.status.code == 0:
        assert response.HasField("ok_response"), response
        headers = {h.header.key: h.header.value for h in response.ok_response.headers}
        assert list(response.ok_response.headers_to_remove) == (
            [] if forward else ["authorization"]
        )
        return Answer(
            allowed=True, entry_id=headers["x-authz-entry-id"], subject=headers["x-authz-subject"]
        )
    assert response.HasField("denied_response"), response
    denied = response.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    reason = headers["x-ext-auth-reason"]
    assert response.status.message == reason == json.loads(denied.body)["reason"], response
    if reason == "misconfigured_route":
        assert (response.status.code, denied.status.code) == (3, 500), response
        return REFUSED
    assert headers["www-authenticate"].startswith('Bearer realm="authz-service"'), response
    if reason in UNAUTHENTICATED_REASONS:
        assert (response.status.code, denied.status.code) == (16, 401), response
    else:
        assert reason in FORBIDDEN_REASONS, response
        assert (response.status.code, denied.status.code) == (7, 403), response
    return Answer(allowed=False, reason=reason)


@fuzz_settings(300)
@given(data=st.data())
def test_envoy_check_answers_as_the_route_and_the_decision_table_say(
    fuzz: Fuzz, data: st.DataObject
) -> None:
    request = data.draw(envoy_requests(sorted(fuzz.holders)), label="request")
    http = request.attributes.request.http
    secrets = [
        p for v in [*http.headers.values(), *strings_of(http.header_map)] for p in token_parts(v)
    ]
    public = external_auth_pb2.CheckRequest()
    public.CopyFrom(request)
    public.attributes.request.http.ClearField("headers")
    public.attributes.request.http.ClearField("header_map")
    # A warning about a misconfigured route names the host and path together.
    fuzz.sent.add((http.host + http.path)[:ECHO_CHARS])
    outcome = fuzz.call(
        "EnvoyCheck", lambda: fuzz.envoy.Check(request, timeout=TIMEOUT), public, secrets
    )
    assert outcome.code == OK, outcome
    expected, forward = expect_envoy(fuzz, request)
    answer = envoy_answer(outcome.response, forward)
    event(answer.reason or "ALLOW" if isinstance(answer, Answer) else "misconfigured")
    if expected is not None:
        assert answer == expected


# -- Health -----------------------------------------------------------------------------------


@fuzz_settings(60)
@given(
    service=st.sampled_from([*SERVED, "grpc.health.v1.Health", "authz.v1", "AUTHZ.V1.AUTHZSERVICE"])
    | fuzzed.odd_text()
)
def test_health_answers_serving_for_each_service_and_not_found_for_any_other_name(
    fuzz: Fuzz, service: str
) -> None:
    request = health_pb2.HealthCheckRequest(service=service)
    outcome = fuzz.call(
        "HealthCheck", lambda: fuzz.health.Check(request, timeout=TIMEOUT), request, []
    )
    if service in SERVED:
        assert outcome.code == OK, outcome
        assert outcome.response.status == health_pb2.HealthCheckResponse.SERVING
    else:
        assert outcome.code == NOT_FOUND, outcome


def test_the_server_logged_no_traceback_no_error_and_no_token_and_exits_cleanly(
    fuzz: Fuzz,
) -> None:
    """Runs last: stops the server, so every line it wrote has been read."""
    assert fuzz.server.stop(signal.SIGTERM) == 0
    fuzz.assert_log_clean(since=0)
