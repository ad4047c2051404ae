"""The one YAML loader and dumper of the project: specs, `--set` values, cluster profiles, config.yaml.

    yamlio.load(text)    # safe types only, YAML 1.2 floats, no anchors or aliases
    yamlio.dump(obj)     # safe_dump that never writes an anchor, so load(dump(x)) always works

Anchors and aliases (`&a`, `*a`, `<<: *a`) are refused outright: an alias is the only way a few
bytes of YAML expand into gigabytes ("billion laughs"), and composing one hangs the process at
100% CPU before any check can run. The refusal is a yaml.YAMLError naming the line, so every
caller's existing YAML error path names the file (or --set value) too.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

ALIAS_RULE = "anchors and aliases (&name, *name, <<: *name) are not allowed: write the values out"


class NoAliasError(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark | None):
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        super().__init__(f"{ALIAS_RULE}{where}")


class Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses anchors/aliases, plus YAML 1.2 floats (`1e-3` is a float,
    not the string PyYAML 1.1 makes it)."""

    def compose_node(self, parent, index):  # type: ignore[override]
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise NoAliasError(event.start_mark)
        return super().compose_node(parent, index)


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


class Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # a shared list is written twice, never as &id001/*id001
        return True


def load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def dump(obj: Any, **kw: Any) -> str:
    return yaml.dump(obj, Dumper=Dumper, **kw)
