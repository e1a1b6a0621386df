"""The daemon's and the workers' own log (structlog, on stderr): its format and its level.

Not the containers' output (that is logs/). A module of its own so that a worker process
configures its log without importing the daemon.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

#: The least level logged; set_log_level() changes it while running (the SIGHUP reload).
_log_level = {"min": logging.INFO}
_LEVEL_NUMBERS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
                  "error": logging.ERROR, "critical": logging.CRITICAL, "exception": logging.ERROR}


def set_log_level(level: str) -> None:
    _log_level["min"] = getattr(logging, level.upper())


def _drop_below_level(logger: Any, method_name: str, event_dict: Any) -> Any:
    if _LEVEL_NUMBERS.get(method_name, logging.INFO) < _log_level["min"]:
        raise structlog.DropEvent
    return event_dict


def configure_logging(log_format: str = "logfmt", level: str = "info") -> Any:
    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event"])
    )
    set_log_level(level)
    structlog.configure(
        processors=[
            _drop_below_level,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        # Filtered by _drop_below_level instead, so that a reload can lower the level.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger("dockyard")
