"""SQL that lives in the database (functions), one file per named version.

A migration installs a version by loading its file; a new body is a new file and a new
migration, never an edit, so that a migration means the same thing whenever it runs.
"""

from __future__ import annotations

import re
from importlib.resources import files

_BODY = re.compile(r"\bAS \$\$(.*)\$\$;\s*\Z", re.DOTALL)


def load(name: str) -> str:
    """The text of `<name>.sql` shipped in this package."""
    return files(__package__).joinpath(f"{name}.sql").read_text(encoding="utf-8")


def function_body(name: str) -> str:
    """What PostgreSQL keeps as the source (`pg_proc.prosrc`) of the function in `<name>.sql`."""
    found = _BODY.search(load(name))
    if found is None:
        raise ValueError(f"{name}.sql does not define a function with a $$ body")
    return found.group(1)
