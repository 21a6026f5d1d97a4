"""Reading rtpengine.conf-style ini files, ``.env`` files and ``${VAR}``.

Pure functions over bytes and mappings: nothing here looks at
``os.environ`` by itself; callers pass the environment in.

Variable substitution (config-file values and command-line values alike):

* ``${NAME}`` and ``$NAME`` (NAME = letters, digits, ``_``, not starting
  with a digit) are replaced by the variable's value; ``$$`` is a literal
  ``$``; a ``$`` followed by anything else is left as it is.
* A variable is looked up in the process environment first, then in the
  ``.env`` file next to the config file (the environment wins, as with
  docker compose).  A variable in neither is an error naming the file, the
  key and the variable.
* ``.env`` syntax: ``KEY=VALUE`` lines, optional ``export`` in front, blank
  lines and ``#`` comment lines ignored, values optionally in single or
  double quotes (quotes removed, nothing else interpreted).
"""

import configparser
import difflib
import re

from omnirtp.errors import ConfigError
from omnirtp.config.options import BY_NAME, COMMAND_LINE_ONLY, KEY_ALIASES, LIST

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VAR = re.compile(r"\$(?:\$|\{(" + _NAME + r")\}|(" + _NAME + r")|(\{))")
_DOTENV_LINE = re.compile(r"^(?:export\s+)?(" + _NAME + r")\s*=\s*(.*)$")

# A section name that cannot clash with a real one, for keys written before
# any [section] header (the seed deployment's rtpengine.conf has none).
_TOP = "\0top"


def parse_dotenv(data, path):
    """Parse the bytes of a ``.env`` file into ``{name: value}``.

    ``path`` is only used in error messages.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("{}: not UTF-8 text ({})".format(path, e))
    result = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        if match is None:
            raise ConfigError(
                "{}:{}: expected NAME=VALUE, got {!r}".format(path, number, line))
        name, value = match.groups()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif value[:1] in ("'", '"'):
            raise ConfigError(
                "{}:{}: unterminated quote in the value of {}".format(path, number, name))
        else:
            # an unquoted value ends at " #" (an inline comment)
            value = value.split(" #", 1)[0].rstrip()
        result[name] = value
    return result


def substitute(value, environ, dotenv, where, dotenv_path=None):
    """Replace ``${NAME}``/``$NAME`` in ``value``; see the module docstring.

    ``where`` names the value in error messages ("FILE: [section] key" or
    "command line: --key").
    """
    def replace(match):
        text = match.group(0)
        if text == "$$":
            return "$"
        if match.group(3) is not None:
            raise ConfigError(
                "{}: unterminated or invalid ${{...}} in {!r}".format(where, value))
        name = match.group(1) or match.group(2)
        if name in environ:
            return environ[name]
        if name in dotenv:
            return dotenv[name]
        places = "the environment"
        if dotenv_path is not None:
            places += " or " + dotenv_path
        raise ConfigError(
            "{}: undefined variable {} (not in {})".format(where, name, places))

    return _VAR.sub(replace, value)


class FileValues:
    """What one config file says: ``values`` maps option name to
    ``(raw, where)`` (``raw`` is a str, or a tuple of str for list options),
    ``warnings`` are sentences for the log."""

    def __init__(self, path, section, values, warnings):
        self.path = path
        self.section = section
        self.values = values
        self.warnings = warnings


def parse_config(data, path, section, environ, dotenv=None, dotenv_path=None):
    """Parse the bytes of an rtpengine.conf-style file.

    Only ``section`` is read (other sections belong to templates and other
    features).  Keys written before any section header are read as part of
    ``section``, with a warning.  Unknown keys are warnings, with a "did you
    mean" for near misses; ``interfaces`` is read as ``interface``.
    """
    if dotenv is None:
        dotenv = {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("{}: not UTF-8 text ({})".format(path, e))
    parser = configparser.ConfigParser(
        interpolation=None, strict=False, default_section="\0default",
        comment_prefixes=("#", ";"), inline_comment_prefixes=None,
        empty_lines_in_values=False)
    parser.optionxform = str  # keys are case-sensitive, as in rtpengine
    # Leading blanks mean nothing in rtpengine's (GLib's) format, while
    # configparser would read an indented line as a continuation.
    text = "\n".join(line.lstrip() for line in text.splitlines())
    try:
        parser.read_string("[" + _TOP + "]\n" + text, source=path)
    except configparser.Error as e:
        raise ConfigError("{}: cannot parse: {}".format(path, _one_line(e)))

    warnings = []
    items = []
    top = list(parser.items(_TOP)) if parser.has_section(_TOP) else []
    if top:
        warnings.append(
            "{}: keys before any [section] header are read as [{}]".format(path, section))
        items.extend(top)
    if parser.has_section(section):
        items.extend(parser.items(section))
    elif not top:
        raise ConfigError("{}: no section [{}]".format(path, section))

    raw = {}
    for key, value in items:
        raw[key] = value  # a later duplicate wins

    values = {}
    for key, value in raw.items():
        where = "{}: [{}] {}".format(path, section, key)
        name = key
        if key in KEY_ALIASES:
            name = KEY_ALIASES[key]
            if name in raw:
                warnings.append(
                    "{}: '{}' is not an rtpengine key and '{}' is also set; "
                    "'{}' ignored".format(where, key, name, key))
                continue
            warnings.append(
                "{}: '{}' is not an rtpengine key (rtpengine ignores it and then "
                "fails with 'Missing option --{}'); read as '{}'".format(
                    where, key, name, name))
        option = BY_NAME.get(name)
        if option is None or name in COMMAND_LINE_ONLY:
            warnings.append(_unknown_key(where, key))
            continue
        value = substitute(value.strip(), environ, dotenv, where + " = " + value.strip(),
                           dotenv_path)
        if option.kind == LIST:
            value = tuple(v.strip() for v in value.split(";") if v.strip())
        values[name] = (value, "{} = {}".format(where, _show(value)))
    if "interfaces-config" in values:
        _interface_sections(parser, path, values, warnings, environ, dotenv, dotenv_path)
    return FileValues(path, section, values, warnings)


#: keys of an interface section (``interfaces-config``) that omnirtp reads
_IFACE_KEYS = ("name", "address", "advertised", "alias")
#: keys it accepts there but does not act on (one port range for all)
_IFACE_IGNORED = ("port-min", "port-max", "exclude-ports")


def _interface_sections(parser, path, values, warnings, environ, dotenv, dotenv_path):
    """The current rtpengine's interface sections: with ``interfaces-config
    = PREFIX``, each ``[PREFIX-NAME]`` section is one interface (``address``,
    optional ``name`` overriding NAME and ``advertised``) or an alias
    (``alias = OTHER``).  They become ``interface`` values after those of the
    ``interface`` key, in file order, as ``NAME/ADDRESS[!ADVERTISED]`` and
    ``NAME=OTHER``."""
    prefix = values["interfaces-config"][0] + "-"
    specs = list(values.get("interface", ((), None))[0])
    for name in parser.sections():
        if not name.startswith(prefix) or len(name) == len(prefix):
            continue
        where = "{}: [{}]".format(path, name)
        items = {}
        for key, value in parser.items(name):
            if key in _IFACE_IGNORED:
                warnings.append("{} {}: per-interface port ranges are not supported; "
                                "port-min/port-max apply".format(where, key))
            elif key not in _IFACE_KEYS:
                warnings.append(_unknown_key(where, key))
            else:
                items[key] = substitute(value.strip(), environ, dotenv,
                                        "{} {} = {}".format(where, key, value.strip()),
                                        dotenv_path)
        iface = items.get("name") or name[len(prefix):]
        if "alias" in items:
            specs.append("{}={}".format(iface, items["alias"]))
        elif "address" in items:
            text = "{}/{}".format(iface, items["address"])
            if items.get("advertised"):
                text += "!" + items["advertised"]
            specs.append(text)
        else:
            raise ConfigError("{}: an interface section needs 'address' or 'alias'".format(where))
    values["interface"] = (tuple(specs), "{}: interface and interfaces-config".format(path))


def _unknown_key(where, key):
    if key in COMMAND_LINE_ONLY:
        return "{}: '{}' only works on the command line; ignored".format(where, key)
    candidates = [n for n in list(BY_NAME) + list(KEY_ALIASES)
                  if n not in COMMAND_LINE_ONLY]
    close = difflib.get_close_matches(key.replace("_", "-"), candidates, n=1, cutoff=0.75)
    if close:
        suggestion = KEY_ALIASES.get(close[0], close[0])
        return "{}: unknown option '{}' ignored; did you mean '{}'?".format(
            where, key, suggestion)
    return "{}: unknown option '{}' ignored".format(where, key)


def _show(value):
    if isinstance(value, tuple):
        return ";".join(value)
    return value


def _one_line(error):
    return " ".join(str(error).split())
