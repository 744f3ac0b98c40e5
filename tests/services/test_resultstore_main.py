"""The resultstore process wiring that needs no broker: structured log lines and argument handling."""

from __future__ import annotations

import json
import logging

from services.resultstore.main import JsonFormatter, main


def test_json_log_lines_carry_the_extra_fields_and_the_traceback() -> None:
    record = logging.makeLogRecord(
        {"name": "services.resultstore", "levelname": "INFO", "msg": "stored task %s", "args": ("t-1",),
         "task_id": "t-1", "rows_written": 2}
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "stored task t-1" and line["level"] == "INFO"
    assert (line["task_id"], line["rows_written"]) == ("t-1", 2)
    assert "args" not in line and "msg" not in line

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        failed = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    assert "RuntimeError: boom" in json.loads(JsonFormatter().format(failed))["exception"]


def test_main_refuses_arguments() -> None:
    assert main(["--help"]) == 2
