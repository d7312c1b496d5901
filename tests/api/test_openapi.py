"""The served OpenAPI document is valid and documents every call with a model."""

from openapi_spec_validator import validate


def test_swagger_json_is_valid_openapi(client):
    spec = client.get("/swagger.json").get_json()
    validate(spec)
    paths = spec["paths"]
    for path in (
        "/edsservice",
        "/edsservice/{name}",
        "/edsservice/{name}/hosts",
        "/edsservice/{name}/hosts/{endpoint}",
        "/v3/discovery:endpoints",
        "/v2/discovery:endpoints",
        "/v1/registration/{name}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/clients",
    ):
        assert path in paths, path
    for name in ("Host", "Tags", "ServiceInput", "Service", "Error", "DiscoveryRequest", "Client", "Clients"):
        assert name in spec["definitions"], name
    assert spec["definitions"]["Host"]["properties"]["port"]["example"] == 8001
    assert spec["definitions"]["Host"]["properties"]["expires_in"]["readOnly"] is True


def test_swagger_ui_is_at_the_root(client):
    page = client.get("/")
    assert page.status_code == 200 and b"swagger" in page.data.lower()
