"""``twistd [twistd options] omnirtp [omnirtp options]``.

Every option rtpengine 10.5 accepts is accepted here, long and short
(``--port-min``/``-m``, ...), so an rtpengine command line starts unchanged
after ``twistd -n omnirtp``.  twistd's own options go before ``omnirtp``
(``twistd -n --pidfile= omnirtp -p /run/x.pid`` is fine: the second ``-p``
is omnirtp's, i.e. rtpengine's ``--pidfile``).  ``--foreground``/``-f`` is
accepted; what keeps the process in the foreground is ``twistd -n``.

Our additions: ``--config-test`` validates the configuration exactly as a
start would, prints the result and exits 0 or 1 without binding anything;
``-v``/``--version`` prints omnirtp's version.
"""

import os
import sys

from twisted.python import usage

from omnirtp import __version__
from omnirtp.errors import ConfigError
from omnirtp.config import DEFAULT_FILES, load
from omnirtp.config.model import resolve_host
from omnirtp.config.options import FLAG, LIST, OPTIONS

CONFIG_OK = "omnirtp: configuration OK"


def _where(option, raw):
    if option.kind == FLAG:
        return "command line: --" + option.name
    if option.kind == LIST:
        return "command line: --{}".format(option.name)
    return "command line: --{}={}".format(option.name, raw)


def _handler(option):
    """An ``opt_*`` method recording the raw command-line value."""
    if option.kind == FLAG:
        def handler(self):
            self.cli[option.name] = (True, _where(option, True))
    elif option.kind == LIST:
        def handler(self, value):
            previous = self.cli.get(option.name, ((), None))[0]
            self.cli[option.name] = (previous + (value,), _where(option, value))
    else:
        def handler(self, value):
            self.cli[option.name] = (value, _where(option, value))
    doc = option.help
    if not option.implemented:
        doc += " [accepted, not implemented yet]"
    if option.kind == LIST:
        doc += " (repeatable)"
    handler.__doc__ = doc
    handler.__name__ = "opt_" + option.attr
    return handler


class Options(usage.Options):
    """rtpengine's options, parsed into ``self.config`` (a ``Config``)."""

    synopsis = "[options]"
    longdesc = ("rtpengine-compatible media proxy. Reads rtpengine.conf-style "
                "files; see etc/omnirtp.conf.")

    # Seams for tests; None means os.environ / sys.stdout / sys.stderr.
    environ = None
    defaultConfigFiles = DEFAULT_FILES
    resolve = staticmethod(resolve_host)
    stdout = None
    stderr = None

    def __init__(self):
        usage.Options.__init__(self)
        self.cli = {}
        self.config = None
        self.configTest = False

    def parseOptions(self, options=None):
        """Parse; under twistd, a usage error is printed and exits 1.

        twistd 22.4 (Debian 12) prints a usage error and then exits with
        status 0, which hides a broken configuration from systemd and
        scripts; 26.10 exits 1.  So, when twistd is the caller
        (``self.parent`` is its ServerOptions), we print the error ourselves
        and exit 1 on both.  Called directly, this raises ``UsageError``.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            self._print("twistd omnirtp: {}".format(e), error=True)
            self._print("Run 'twistd omnirtp --help' for the options.", error=True)
            raise SystemExit(1)

    def opt_version(self):
        """print omnirtp's version and exit"""
        self._print("omnirtp {}".format(__version__))
        raise SystemExit(0)

    opt_v = opt_version

    opt_h = usage.Options.opt_help

    def opt_config_test(self):
        """check the configuration, print the result and exit (0 = OK, 1 = error)"""
        self.configTest = True

    def _print(self, line, error=False):
        stream = (self.stderr or sys.stderr) if error else (self.stdout or sys.stdout)
        stream.write(line + "\n")
        stream.flush()

    def postOptions(self):
        if self.cli.get("codecs", (False,))[0]:
            self._print("omnirtp: --codecs is not implemented yet", error=True)
            raise SystemExit(1)
        environ = os.environ if self.environ is None else self.environ
        try:
            self.config = load(self.cli, environ=environ,
                               default_files=self.defaultConfigFiles,
                               resolve=self.resolve)
        except ConfigError as e:
            if self.configTest:
                self._print("omnirtp: configuration error: {}".format(e), error=True)
                raise SystemExit(1)
            raise usage.UsageError(str(e))
        self["config"] = self.config
        if self.configTest:
            for line in describe_warnings(self.config):
                self._print("warning: " + line)
            source = self.config.config_file or "no config file"
            self._print("{} ({})".format(CONFIG_OK, source))
            raise SystemExit(0)


for _option in OPTIONS:
    _method = _handler(_option)
    setattr(Options, "opt_" + _option.attr, _method)
    if _option.short:
        setattr(Options, "opt_" + _option.short, _method)
del _option, _method


def describe_warnings(config):
    """The startup warnings for ``config``, one sentence each: the
    ``warnings`` it carries, then one per unimplemented option."""
    from omnirtp.service import startup_warnings
    return startup_warnings(config)


def makeService(options, reactor=None):
    """twistd's entry point: build the service from ``options.config``."""
    from omnirtp.service import makeService as make

    def reload():
        # the same command line and files as at start; its values still win
        return load(options.cli, default_files=options.defaultConfigFiles,
                    resolve=options.resolve,
                    environ=os.environ if options.environ is None else options.environ)

    try:
        return make(options.config, reactor=reactor, reload=reload)
    except ConfigError as e:
        # a check that needs the file system (recording-dir): as a config error
        sys.stderr.write("omnirtp: configuration error: {}\n".format(e))
        raise SystemExit(1)
