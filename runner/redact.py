"""Credentials never leave the process: every artifact, tag, file and printed line convlab writes goes through
:func:`redact` first.

Two rules: the userinfo of any URI (``http://user:secret@host`` -> ``http://***@host``), and the value of any
key named like a credential (``password``, ``token``, ``secret``, ``api_key``, ...) in ``key: value`` (YAML),
``key=value`` (overrides, environment) and ``"key": "value"`` (JSON) form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MASK = "***"
_WORD = r"(?:password|passwd|passphrase|pass|token|secret|api[_-]?key|credentials?|private[_-]?key)"
#: a key that names a credential: it ends with one of the words (``db_password``, ``MLFLOW_TRACKING_TOKEN``)
SECRET_KEY = re.compile(rf"{_WORD}$", re.I)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*\\?://)(?P<userinfo>[^/?#@\s'\"\[\]]+)@")
_KEY_VALUE = re.compile(
    rf"""(?P<key>(?<![\w.-])["']?[\w.-]*{_WORD}["']?)(?P<sep>[ \t]*[:=][ \t]*)"""
    r"""(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s,;&\]}'"]+)""",
    re.I,
)


def redact(text: str) -> str:
    """``text`` with URI userinfo and the values of credential-named keys replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _KEY_VALUE.sub(_mask_value, text)


def _mask_value(match: re.Match) -> str:
    quote = match["value"][0] if match["value"][0] in "'\"" else ""
    return f"{match['key']}{match['sep']}{quote}{MASK}{quote}"


def redact_value(key: str, value: Any) -> Any:
    """A config value as it may be shown: masked whole under a credential-named key, else :func:`redact`-ed."""
    if isinstance(value, Mapping):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(key, item) for item in value]
    if value is not None and SECRET_KEY.search(key):
        return MASK
    return redact(value) if isinstance(value, str) else value


def redact_file(path: Path) -> None:
    """Rewrite a text file in place with its credentials masked (Hydra's ``.hydra/*.yaml``, ``multirun.yaml``)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return
    masked = redact(text)
    if masked != text:
        path.write_text(masked)
