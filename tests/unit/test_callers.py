"""Whose turn a caller's argon2 work takes: one per client host, an IPv6 host by its /64."""

from __future__ import annotations

import pytest

from authz_service.api.convert import client_host, peer_host


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.7:51234", "10.0.0.7"),
        ("ipv6:%5B::1%5D:51234", "::/64"),
        ("ipv6:%5B2001:db8:1:2:aaaa::9%5D:443", "2001:db8:1:2::/64"),
        ("ipv6:%5B::ffff:192.0.2.1%5D:443", "192.0.2.1"),
        ("unix:/run/authz.sock", "unix:/run/authz.sock"),
        ("", ""),
    ],
)
def test_a_peer_is_keyed_by_its_host_not_its_connection(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_two_addresses_of_one_ipv6_host_share_a_turn_and_another_host_does_not() -> None:
    assert client_host("2001:db8::1") == client_host("2001:db8::ffff:1234")
    assert client_host("2001:db8::1") != client_host("2001:db8:0:1::1")
    assert client_host("not an address") == "not an address"
