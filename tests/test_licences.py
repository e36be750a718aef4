"""Every package a user installs with email-automation (MIT) carries a licence that allows it.

The check reads the installed metadata (PEP 566 / PEP 639 fields, through importlib.metadata) of
each runtime dependency, transitively, including the dashboard extra a user may install.
"""

from __future__ import annotations

import re
from email.message import Message
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

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


# Well-known opening lines of licence texts, for a package whose metadata names no licence but
# whose distribution ships the licence file (IMAPClient 3 and 4: BSD-3-Clause in COPYING).
LICENCE_TEXTS = (
    ("GNU AFFERO GENERAL PUBLIC LICENSE", "AGPL (licence file)"),
    ("GNU LESSER GENERAL PUBLIC LICENSE", "LGPL (licence file)"),
    ("GNU GENERAL PUBLIC LICENSE", "GPL (licence file)"),
    ("Redistribution and use in source and binary forms", "BSD (licence file)"),
    ("Permission is hereby granted, free of charge", "MIT (licence file)"),
    ("Apache License", "Apache (licence file)"),
)


def licence_from_files(name: str) -> str:
    """The licence a distribution's own LICENSE/COPYING file states, when it is a well-known one."""
    try:
        files = distribution(name).files or []
    except PackageNotFoundError:  # a stand-in package made by a test has no distribution
        return ""
    for path in files:
        if re.search(r"(LICEN[CS]E|COPYING)", path.name, re.IGNORECASE):
            located = Path(path.locate())
            text = located.read_text(errors="replace") if located.is_file() else ""
            for marker, licence in LICENCE_TEXTS:
                if marker.lower() in text.lower():
                    return licence
    return ""


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
    declared = {name: licence_of(meta) or licence_from_files(name) for name, meta in packages.items()}
    return [f"{name}: {licence or 'no licence declared'}" for name, licence in sorted(declared.items())
            if not licence or COPYLEFT.search(licence)]


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


def test_a_licence_only_in_the_shipped_file_is_read_from_it():
    # IMAPClient 4 names no licence in its metadata (3.0 had a classifier); both ship COPYING.
    assert licence_from_files("imapclient") == "BSD (licence file)"
    assert not_allowed({"imapclient": Message()}) == []
