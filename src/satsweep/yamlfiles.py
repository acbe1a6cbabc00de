"""Reading YAML that satsweep did not write itself: sweep files, experiments, logged configs.

YAML's anchors and aliases let a 340-byte file expand into billions of nodes
(an "alias bomb"): PyYAML and OmegaConf would build them all, and the command
hangs. A file is composed first (aliases stay references, nothing is expanded),
its expanded size is counted, and only a file within :data:`MAX_NODES` is built.
Only plain data is read: a Python tag or binary data is refused, not executed.
LibYAML's parser does the reading where PyYAML was built with it: every command
reads every sweep and experiment file, and it is several times faster.
"""

from __future__ import annotations

from typing import Any

import yaml

from satsweep.errors import UserError

MAX_BYTES = 1 << 20  # a config is a few kilobytes
MAX_NODES = 100_000  # scalars, lists and mappings once aliases are expanded
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str | bytes, origin: str) -> Any:
    """The plain data in ``text``; one-line :class:`UserError` naming ``origin`` otherwise."""
    if len(text) > MAX_BYTES:
        raise UserError(f"{origin} is {len(text)} bytes, more than a config holds: check the file")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{origin} is not UTF-8 text: it is not a config file") from error
    try:
        root = yaml.compose(text, Loader=_SAFE_LOADER)
        _check_size(root, origin)
        return yaml.load(text, Loader=_SAFE_LOADER)  # a safe loader: plain data only
    except RecursionError as error:
        raise UserError(f"{origin} nests too deeply to be a config: check the file") from error
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        place = f", line {where.line + 1}" if where else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(
            f"{origin} is not valid YAML (plain data only){place}: {problem}"
        ) from error


def _check_size(root: yaml.Node | None, origin: str) -> None:
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in open_nodes:
            raise UserError(f"{origin} holds a value that contains itself (a YAML alias loop)")
        if id(node) in sizes:  # an alias: the same node object, counted again
            return sizes[id(node)]
        open_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(key) + size(value) for key, value in node.value)
        else:
            total = 1
        open_nodes.discard(id(node))
        sizes[id(node)] = min(total, MAX_NODES + 1)
        return sizes[id(node)]

    if root is not None and size(root) > MAX_NODES:
        raise UserError(
            f"{origin} expands to more than {MAX_NODES} values through YAML aliases "
            "(anchors used over and over): write its values out, or remove the file"
        )
