"""Log lines: JSON objects with the request id when there is one, never a secret's worth of context."""

import json
import logging

import pytest

from tollway import logs


def emit(capsys: pytest.CaptureFixture[str], log_format: logs.LogFormat, **extra: object) -> str:
    logs.configure("INFO", log_format)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("tollway.test").exception("check failed for %s", "acme", extra=extra)
    return capsys.readouterr().err


def test_json_lines_carry_the_request_id_and_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    [line] = emit(capsys, "json", request_id="req-1").splitlines()
    event = json.loads(line)
    assert event["msg"] == "check failed for acme"
    assert event["level"] == "ERROR"
    assert event["logger"] == "tollway.test"
    assert event["request_id"] == "req-1"
    assert event["ts"].endswith("Z")
    assert "RuntimeError: boom" in event["error"]
    assert isinstance(event["pid"], int)


def test_json_lines_without_a_request_have_no_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    event = json.loads(emit(capsys, "json").splitlines()[0])
    assert "request_id" not in event


def test_text_lines_append_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    first = emit(capsys, "text", request_id="req-2").splitlines()[0]
    assert first.endswith("check failed for acme request_id=req-2")
    assert " ERROR tollway.test pid=" in first
