"""Every package a user installs with email-automation (MIT) carries a licence that allows it.

The check reads the installed metadata (PEP 566 / PEP 639 fields, through importlib.metadata) of
each runtime dependency, transitively, including the dashboard extra a user may install.
"""

from __future__ import annotations

import re
from email.message import Message
from importlib.metadata import distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "email-automation"
RUNTIME_EXTRAS = ("dashboard",)  # optional, but installed by users: its licences count too
# Strong and weak copyleft: code under these cannot be shipped inside an MIT project as MIT.
COPYLEFT = re.compile(r"\b(?:A|L)?GPL|General Public License", re.IGNORECASE)


def licence_of(metadata: Message) -> str:
    """The declared licence: the SPDX License-Expression if any, else the trove classifiers,
    else the first line of the free-text License field (some hold a whole licence file)."""
    if expression := (metadata.get("License-Expression") or "").strip():
        return expression
    classifiers = [c.split("::")[-1].strip() for c in metadata.get_all("Classifier") or []
                   if c.startswith("License ::") and c.strip() != "License :: OSI Approved"]
    if classifiers:
        return " AND ".join(classifiers)
    return ((metadata.get("License") or "").strip().splitlines() or [""])[0]


def runtime_metadata(project: str = PROJECT, extras: tuple[str, ...] = RUNTIME_EXTRAS) -> dict[str, Message]:
    """Name -> metadata of the project's runtime dependencies, transitively, with their extras."""
    found: dict[str, Message] = {}
    todo = [(project, extras)]
    seen = {(canonicalize_name(project), extras)}
    while todo:
        name, wanted = todo.pop()
        dist = distribution(name)
        found[canonicalize_name(name)] = dist.metadata
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in ("", *wanted)):
                continue  # another platform's, or an extra nobody asked for (dev tools)
            key = (canonicalize_name(requirement.name), tuple(sorted(requirement.extras)))
            if key not in seen:
                seen.add(key)
                todo.append(key)
    del found[canonicalize_name(project)]
    return found


def not_allowed(packages: dict[str, Message]) -> list[str]:
    """'name: licence' for each package that is copyleft or declares no licence at all."""
    return [f"{name}: {licence_of(meta) or 'no licence declared'}" for name, meta in sorted(packages.items())
            if not licence_of(meta) or COPYLEFT.search(licence_of(meta))]


def test_every_runtime_dependency_has_a_licence_an_mit_project_may_ship():
    packages = runtime_metadata()
    assert {"boto3", "jinja2", "inscriptis", "streamlit"} <= set(packages)  # the walk reaches them
    assert "pytest" not in packages  # a dev tool is no runtime dependency
    assert not_allowed(packages) == []


def html2text_metadata() -> Message:
    """The licence fields of html2text 2025.4.15, the converter this project used to depend on."""
    meta = Message()
    meta["Name"] = "html2text"
    meta["License-Expression"] = "GPL-3.0-or-later"
    return meta


def test_the_check_flags_a_gpl_dependency_like_html2text():
    packages = runtime_metadata()
    packages["html2text"] = html2text_metadata()
    assert not_allowed(packages) == ["html2text: GPL-3.0-or-later"]


def test_the_licence_is_read_from_whichever_field_the_package_fills():
    meta = Message()
    meta["License"] = "GNU GPL 3\n\nfull text of the licence..."
    assert licence_of(meta) == "GNU GPL 3" and COPYLEFT.search(licence_of(meta))
    meta["Classifier"] = "License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)"
    assert COPYLEFT.search(licence_of(meta))
    assert not_allowed({"mystery": Message()}) == ["mystery: no licence declared"]
