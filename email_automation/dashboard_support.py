"""Is the optional dashboard installed? Asked before starting Streamlit, without importing it.

The dashboard's packages (Streamlit, pandas, pyarrow: some 460 MB) are the `dashboard` extra, so a
cron-only install stays small. `missing_message()` turns their absence, or a release older than
the extra requires, into one line that says what to install.
"""

from __future__ import annotations

from importlib import metadata
from importlib.util import find_spec

PROJECT = "email-automation"
EXTRA = "dashboard"
INSTALL = f"pip install '{PROJECT}[{EXTRA}]'"
PACKAGES = ("streamlit", "pandas")  # what dashboard.py imports; each module is named as its distribution


def missing_message() -> str | None:
    """None when the dashboard can run, else one line naming what is missing and the pip command."""
    missing = [name for name in PACKAGES if find_spec(name) is None]
    if missing:
        return f"the dashboard needs {' and '.join(missing)}, which this install left out: {INSTALL}"
    for requirement in _extra_requirements():
        try:
            installed = _installed_version(requirement.name)
        except metadata.PackageNotFoundError:
            continue  # importable from a path pip does not manage; let it try
        if not requirement.specifier.contains(installed, prereleases=True):
            return (f"the dashboard needs {requirement.name}{requirement.specifier}, but {installed} is installed: "
                    f"pip install --upgrade '{PROJECT}[{EXTRA}]'")
    return None


def _installed_version(name: str) -> str:
    return metadata.version(name)


def _extra_requirements() -> list:
    """The `dashboard` extra's requirements from this package's installed metadata (PEP 508)."""
    try:
        from packaging.requirements import Requirement  # a dependency of Streamlit, so present here

        lines = metadata.requires(PROJECT) or []
    except (ImportError, metadata.PackageNotFoundError):  # running from a source tree
        return []
    requirements = [Requirement(line) for line in lines]
    return [r for r in requirements if r.marker is not None and r.marker.evaluate({"extra": EXTRA})
            and not r.marker.evaluate({"extra": ""})]
