"""Mutual TLS end to end: a real Envoy polls eds-server over mTLS; clients without a trusted certificate are refused."""

import ssl

import pytest
import requests

from eds_server.serving.gunicorn_options import gunicorn_options
from eds_server.settings import SettingsError, load_settings
from scripts.envoy import start_envoy
from scripts.pki import make_pki
from scripts.processes import wait_until

TOKEN = "tls-test-token-0123456789"


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def test_envoy_polls_over_mutual_tls_and_traffic_flows(eds_server, envoy_for, upstreams, pki):
    server = eds_server(tls=pki, env={"EDS_API_TOKENS": TOKEN})
    envoy = envoy_for(server)  # the eds_cluster gets a TLS transport_socket with the client certificate
    alpha = upstreams("alpha")
    response = requests.put(
        f"{server.url}/edsservice/myservice",
        json={"hosts": [alpha.host()]},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
        **server.client_options,
    )
    assert response.status_code == 201
    envoy.wait_for_ports([alpha.port])
    assert wait_until(lambda: envoy.get().text.strip() == "alpha", timeout=5, what="traffic to alpha")
    assert envoy.stat("update_success") >= 1
    # The polls really went over TLS: Envoy's eds_cluster counts its handshakes.
    assert envoy.stats("cluster.eds_cluster.ssl.").get("cluster.eds_cluster.ssl.handshake", 0) >= 1


def test_clients_without_a_trusted_certificate_are_refused(eds_server, pki):
    server = eds_server(tls=pki)
    trusted = requests.get(f"{server.url}/healthz", timeout=5, **server.client_options)
    assert trusted.status_code == 200

    # No client certificate: the handshake fails, no HTTP answer at all.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{server.url}/healthz", timeout=5, verify=str(pki.ca))
    # A certificate from another CA: refused the same way.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{server.url}/healthz", timeout=5, verify=str(pki.ca), cert=pki.stranger.requests_cert)
    # Plain HTTP to the TLS port gets nothing it could use either.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url.replace("https:", "http:") + "/healthz", timeout=5)
    # And the client checks the server: an untrusted CA fails verification.
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        requests.get(f"{server.url}/healthz", timeout=5, cert=pki.client.requests_cert, verify=True)
    # The server still serves trusted clients after every refusal.
    assert requests.get(f"{server.url}/healthz", timeout=5, **server.client_options).status_code == 200


def test_an_envoy_without_a_client_certificate_gets_no_endpoints(eds_server, pki, tmp_path):
    server = eds_server(tls=pki)
    requests.put(
        f"{server.url}/edsservice/myservice",
        json={"hosts": [{"ip_address": "127.0.0.1", "port": 9}]},
        timeout=5,
        **server.client_options,
    ).raise_for_status()
    envoy = start_envoy(tmp_path, [server.port], eds_tls=pki, client_cert=False)
    try:
        wait_until(lambda: envoy.stat("update_failure") >= 2, timeout=15, what="failed polls without a certificate")
        assert envoy.host_ports() == []
        assert envoy.stat("update_success") == 0
    finally:
        envoy.stop()


def test_tls_settings_are_checked_at_start_up(pki):
    with pytest.raises(SettingsError, match="need certfile"):
        load_settings(["--require-client-cert"], environ={})
    with pytest.raises(SettingsError, match="needs ca_certs"):
        load_settings(
            ["--certfile", str(pki.server.cert), "--keyfile", str(pki.server.key), "--require-client-cert"], environ={}
        )
    # A key that does not belong to the certificate fails here, not at every handshake.
    with pytest.raises(SettingsError, match="TLS files"):
        load_settings(["--certfile", str(pki.server.cert), "--keyfile", str(pki.client.key)], environ={})
    settings = load_settings(
        [],
        environ={
            "EDS_CERTFILE": str(pki.server.cert),
            "EDS_KEYFILE": str(pki.server.key),
            "EDS_CA_CERTS": str(pki.ca),
            "EDS_REQUIRE_CLIENT_CERT": "true",
        },
    )
    options = gunicorn_options(settings)
    assert options["certfile"] == str(pki.server.cert) and options["cert_reqs"] == ssl.CERT_REQUIRED
