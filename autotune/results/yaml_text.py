"""YAML as a person reads it: each value written out where it belongs, never as an anchor.

PyYAML writes an object met twice as ``&id001`` and then ``*id001``: correct YAML, but a
reader of ``config.yaml`` sees a reference where a list of columns should be.
"""

from __future__ import annotations

from typing import Any

import yaml


class _Plain(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(data: Any, sort_keys: bool = False) -> str:
    """``data`` as YAML (keys in their own order unless ``sort_keys``), with no anchors."""
    return yaml.dump(data, Dumper=_Plain, sort_keys=sort_keys)
