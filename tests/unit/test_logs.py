"""Log lines hold what a client chose only cut and escaped (serving/logs.py), in both formats."""

from __future__ import annotations

import io
import json
import logging

import pytest

from eds_server.serving.logs import (
    ACCESS_FORMAT,
    MAX_LINE_CHARS,
    MAX_VALUE_CHARS,
    TEXT_FORMAT,
    json_formatter,
    safe_handlers,
)

FORGED = "edge-1\n[2026-01-01 00:00:00,000] [1] [INFO] eds_server.registry: delete service=payments by=admin"


@pytest.fixture(params=["text", "json"])
def logged(request):
    """A logger whose one handler writes to a string in the given format, as configure() sets it up."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(json_formatter() if request.param == "json" else logging.Formatter(TEXT_FORMAT))
    logger = logging.getLogger(f"eds_server.test_logs.{request.param}")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
    safe_handlers(logger)

    def lines() -> list[str]:
        """Each line as written; a JSON line as its message with the extra fields after it."""
        written = out.getvalue().splitlines()
        if request.param == "text":
            return written
        return [" ".join(str(v) for k, v in json.loads(line).items() if k not in ("time", "pid")) for line in written]

    yield logger, lines, request.param
    logger.handlers = []


def test_a_value_cannot_forge_a_line_nor_move_the_cursor_nor_reverse_text(logged):
    logger, lines, _ = logged
    logger.info("poll from %s at %s", FORGED, "esc\x1b[2J\x1b[31m \u202eevil \x85 \u2028 \r end")
    [line] = lines()
    for raw in ("\x1b", "\u202e", "\x85", "\u2028", "\r"):
        assert raw not in line
    for escape in ("\\n[2026-01-01", "\\x1b[2J", "\\u202eevil", "\\x85", "\\u2028", "\\r end"):
        assert escape in line


def test_a_long_value_is_cut_and_says_how_long_it_was(logged):
    logger, lines, _ = logged
    logger.info("node=%s status=%d", "x" * 1_000_000, 200)
    [line] = lines()
    assert len(line) < MAX_VALUE_CHARS + 300
    assert "...[1000000 chars]" in line and "status=200" in line


def test_gunicorns_access_atoms_are_made_safe_as_the_format_reads_them(logged):
    logger, lines, _ = logged
    atoms = {"h": "127.0.0.1", "r": "POST /v3/discovery:endpoints HTTP/1.1", "s": "200", "B": "271", "M": "1"}
    atoms["{eds.node}e"] = FORGED
    logger.info(ACCESS_FORMAT, atoms)
    [line] = lines()
    assert "node=edge-1\\n[2026-01-01" in line


def test_json_extra_fields_are_made_safe_too(logged):
    logger, lines, log_format = logged
    logger.info("%s %s", "POST", "/v3/discovery:endpoints", extra={"node": FORGED, "user_agent": 'a"b\x9bc'})
    [line] = lines()
    if log_format == "json":
        assert "edge-1\\n[2026-01-01" in line and "a\\x22b\\x9bc" in line


def test_a_line_the_code_wrote_itself_is_escaped_and_bounded(logged):
    """gunicorn formats some messages before logging them (an invalid request line, say)."""
    logger, lines, _ = logged
    logger.info("Invalid request from ip=1.2.3.4: " + FORGED + "y" * (2 * MAX_LINE_CHARS))
    [line] = lines()
    assert "\\n[2026-01-01" in line and len(line) < MAX_LINE_CHARS + 200


def test_a_broken_format_is_still_one_safe_line(logged):
    logger, lines, _ = logged
    logger.info("%d items", FORGED)
    [line] = lines()
    assert "\\n[2026-01-01" in line


def test_a_second_pass_leaves_a_record_as_the_first_made_it(logged):
    logger, lines, _ = logged
    logger.handlers.append(logger.handlers[0])  # the same record through two handlers
    logger.info("%s %s", FORGED, "z" * 10_000, extra={"node": "q" * 5000 + "\x1b"})
    first, second = lines()
    assert first == second
