"""The gRPC setting, and the clients-view rows that gRPC streams add beside REST polls."""

import json

import pytest

from eds_server.settings import SettingsError, load_settings
from eds_server.store.base import ClientRow, dump_client, load_client
from eds_server.xds.clients import ClientStatus


def test_grpc_port_from_the_command_line_or_the_environment():
    assert load_settings([]).grpc_port is None
    assert load_settings(["--grpc-port", "8081"]).grpc_port == 8081
    settings = load_settings([], environ={"EDS_GRPC_PORT": "9001", "EDS_HOST": "::"})
    assert (settings.grpc_port, settings.grpc_address) == (9001, "[::]:9001")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--grpc-port", "8080"], "not the REST port 8080"),
        (["--grpc-port", "70000"], "must be 1-65535"),
        (["--grpc-port", "8081", "--store", "memory://", "--workers", "1"], "process of its own"),
    ],
)
def test_a_grpc_port_that_cannot_work_is_refused_with_the_reason(argv, says):
    with pytest.raises(SettingsError, match=says):
        load_settings(argv)


def _row(**fields) -> ClientRow:
    values = dict(
        node_id="edge-1", resource_name="web", cluster="c", envoy_version="1.40.0", resource_names=("web",),
        api="v3", version_held="v1", last_poll=1.0, polls=1, rejected_polls=0, sent_version="v2",
    )  # fmt: skip
    return ClientRow(**{**values, **fields})


def test_a_row_stored_before_the_grpc_fields_reads_as_a_rest_row():
    stored = json.loads(dump_client(_row()))
    for field in ("transport", "mode", "rejected_version", "rejected_message"):
        del stored[field]
    row = load_client(json.dumps(stored))
    assert (row.transport, row.mode, row.rejected_version, row.rejected_message) == ("rest", "poll", None, None)


def test_a_grpc_nack_of_the_current_version_is_rejected_with_envoys_message():
    nacked = _row(transport="grpc", mode="ads-delta", rejected_version="v2", rejected_message="bad weight")
    status = ClientStatus(nacked, current_version="v2")
    assert (status.rejected, status.stuck, status.rejection) == (True, True, "bad weight")
    # A newer write since: the NACK was of an older version, the node is merely behind.
    behind = ClientStatus(nacked, current_version="v3")
    assert (behind.rejected, behind.stuck, behind.rejection) == (False, False, None)


def test_a_rest_row_is_rejected_exactly_when_stuck():
    stuck = ClientStatus(_row(rejected_polls=1), current_version="v2")
    assert stuck.stuck and stuck.rejected and stuck.rejection is None
    fresh = ClientStatus(_row(rejected_polls=0), current_version="v2")
    assert not fresh.stuck and not fresh.rejected
