"""The secret values of the gateway's settings, for ``standby.scrub``'s registry: what no error
body, log record or captured event may hold."""

from __future__ import annotations

import os
from pathlib import Path

from standby.config import Settings
from standby.gateway.auth import key_file_lines
from standby.scrub import named_secrets, url_secrets

# Environment variables that hold secrets whether or not the config names them.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold: gateway and admin keys (not ``sha256:`` digests) with
    the key file's, each backend's API key, passwords of storage and backend URLs, keys in a
    URL's query string, the secret-named members of ``extra``/``extra_body``, and HF_TOKEN."""
    server = settings.server
    found = [k.get_secret_value() for k in (*server.api_keys, *server.admin_keys)]
    if server.api_keys_file is not None:
        found += key_file_keys(server.api_keys_file)
    for backend in settings.backends.values():
        key = getattr(backend, "api_key", None)
        if key is not None:
            found.append(key.get_secret_value())
        for field in ("base_url", "api_base"):
            url = getattr(backend, field, None)
            if isinstance(url, str):
                found += url_secrets(url)
        for field in ("extra", "extra_body"):
            found += named_secrets(getattr(backend, field, None))
    for url in (settings.capture.bus, settings.registry.url, settings.data.store):
        if url:
            found += url_secrets(url)
    found += [os.environ[name] for name in SECRET_ENV if os.environ.get(name)]
    return [s.strip() for s in found if s.strip() and not s.strip().startswith("sha256:")]


def key_file_keys(path: Path) -> list[str]:
    """The raw keys of a gateway key file (its entries that are not ``sha256:`` digests). A
    file that cannot be read gives none: reading the keys reports that."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [key for _, key in key_file_lines(text) if not key.startswith("sha256:")]
