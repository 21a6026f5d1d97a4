"""Configuration: rtpengine.conf-style file + command line -> ``Config``.

:func:`load` is the whole chain; ``omnirtp.tap.Options.postOptions`` calls
it.  Which file is read:

* ``--config-file=none``: no file;
* ``--config-file=PATH``: that file, which must exist and hold the section;
* otherwise the first of :data:`DEFAULT_FILES` that exists (none = fine).

The section is ``[rtpengine]`` unless ``--config-section`` says otherwise.
Command-line values override the file's (a command-line list replaces the
file's list).  ``${VAR}``/``$VAR`` are substituted in both, from the
environment, then from the ``.env`` file in the config file's directory
(see :mod:`omnirtp.config.ini`).
"""

import os

from omnirtp.errors import ConfigError
from omnirtp.config.ini import parse_config, parse_dotenv, substitute
from omnirtp.config.model import (
    Config, InterfaceSpec, build_config, resolve_host)
from omnirtp.config.options import BY_NAME, OPTIONS

__all__ = ["Config", "ConfigError", "InterfaceSpec", "DEFAULT_FILES", "load",
           "OPTIONS", "BY_NAME"]

DEFAULT_FILES = ("/etc/omnirtp/omnirtp.conf", "/etc/rtpengine/rtpengine.conf")
NO_FILE = "none"
DEFAULT_SECTION = "rtpengine"


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError("{}: cannot read: {}".format(path, e.strerror or e))


def load(cli=None, environ=None, default_files=DEFAULT_FILES, resolve=resolve_host):
    """Build the :class:`Config` from command-line values and a file.

    ``cli`` maps option names to ``(raw, where)`` as
    :func:`omnirtp.config.model.build_config` takes them, and may hold
    ``config-file``/``config-section``.  ``environ`` defaults to
    ``os.environ``.  Raises ``ConfigError``.
    """
    cli = dict(cli or {})
    if environ is None:
        environ = os.environ
    path = cli.pop("config-file", (None, None))[0]
    section = cli.pop("config-section", (DEFAULT_SECTION, None))[0]

    if path is None:
        path = next((p for p in default_files if os.path.isfile(p)), None)
    elif path == NO_FILE:
        path = None

    dotenv, dotenv_path, file_values, warnings = {}, None, {}, []
    if path is not None:
        data = _read(path)
        candidate = os.path.join(os.path.dirname(os.path.abspath(path)), ".env")
        if os.path.isfile(candidate):
            dotenv_path = candidate
            dotenv = parse_dotenv(_read(candidate), candidate)
        parsed = parse_config(data, path, section, environ, dotenv, dotenv_path)
        file_values = parsed.values
        warnings.extend(parsed.warnings)

    values = dict(file_values)
    for name, (raw, where) in cli.items():
        if isinstance(raw, str):
            raw = substitute(raw, environ, dotenv, where, dotenv_path)
        elif isinstance(raw, tuple):
            raw = tuple(substitute(r, environ, dotenv, where, dotenv_path) for r in raw)
        values[name] = (raw, where)

    variables = dict(dotenv)
    variables.update(environ)
    return build_config(values, config_file=path, config_section=section,
                        warnings=warnings, resolve=resolve, variables=variables)
