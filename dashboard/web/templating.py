"""Jinja filters shared by all templates (formatting is pure and unit-tested)."""

from __future__ import annotations

import json
from typing import Any

from litestar.plugins.jinja import JinjaTemplateEngine

from dashboard import formatting
from dashboard.runs.views import fold_log


def configure_templates(engine: JinjaTemplateEngine) -> None:
    env = engine.engine
    env.autoescape = True
    env.filters["duration"] = formatting.duration
    env.filters["short_rev"] = formatting.short_rev
    env.filters["truncate_query"] = formatting.truncate_query
    env.filters["tojson_attr"] = _tojson_attr
    env.filters["fold_log"] = fold_log
    env.globals["state_label"] = formatting.state_label


def _tojson_attr(value: Any) -> str:
    return json.dumps(value)
