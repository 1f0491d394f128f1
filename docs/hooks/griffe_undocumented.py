"""Griffe extension for the API reference: drop attributes that have no docstring (module constants, dataclass
fields: the class signature already lists the fields with their defaults), so that `show_if_no_docstring: true`
shows every public function, class, method and property, documented or not, without a flood of bare attribute
names."""

from __future__ import annotations

from typing import Any

import griffe


class DropUndocumentedAttributes(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        drop(pkg)


def drop(obj: griffe.Object) -> None:
    for name, member in list(obj.members.items()):
        if member.is_alias:
            continue
        if member.is_attribute and not member.docstring and "property" not in member.labels:
            obj.del_member(name)
        elif member.is_module or member.is_class:
            drop(member)
