"""The Debian package: built, checked, installed and run as an operator would.

The package is built once per test run (``scripts/build-deb``, what ``make
deb`` runs: dpkg-buildpackage with Debian's python3, then lintian with
``--fail-on error,warning``) into this run's temp directory, then:

* its file list: no ``_trial_temp``, no test suite, none of
  python3-twisted's ``twisted/plugins`` files; the conffiles, the unit, a
  man page and an ``/usr/bin`` script for every console script in
  setup.cfg (``omnirtp-ctl`` today; ``omnirtp-pcap2wav`` and any later one
  are checked the same way once setup.cfg names them);
* ``systemd-analyze verify`` on the unit, with no complaint;
* unpacked with ``dpkg -x``: ``twistd3 omnirtp --config-test`` and the
  console scripts under Debian's python3 (no root needed);
* installed on this machine with ``dpkg -i`` (root only; see
  :class:`InstalledTests` for the guards): the system user and file modes
  of postinst; the unit's ``ExecStart`` run as its ``User`` by a stand-in
  for systemd (this machine has no running systemd): ng ``ping``,
  ``omnirtp-ctl list totals``, SIGHUP (``ExecReload``), then SIGTERM stops
  it with status 0 and no process of the user left; then ``dpkg --purge``
  and the user removed, leaving the machine as it was.
"""

import configparser
import fcntl
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.test.integration.peers import (
    LOOPBACK, ROOT, NGClient, free_port, free_port_range)

DEBIAN_PYTHON = "/usr/bin/python3"
APT_LOCK = "/tmp/omnirtp-apt.lock"
INSTALL_LOCK = "/tmp/omnirtp-deb-test.lock"
DIST = "usr/lib/python3/dist-packages"
UNIT = "lib/systemd/system/omnirtp.service"

_built = {}

#: the environment of dpkg and of the service: a plain Debian PATH (a pyenv
#: python first on PATH would run python3-twisted's plugin-cache trigger
#: without Twisted, and the service could not write the cache either)
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
             "DEBIAN_FRONTEND": "noninteractive"}


def _run(argv, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("timeout", 600)
    done = subprocess.run(argv, **kw)
    return done.returncode, done.stdout.decode("utf-8", "replace"), \
        done.stderr.decode("utf-8", "replace")


def console_scripts():
    """The console scripts setup.cfg declares: {name: "module:function"}."""
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    text = parser.get("options.entry_points", "console_scripts", fallback="")
    scripts = {}
    for line in text.splitlines():
        if "=" in line:
            name, target = line.split("=", 1)
            scripts[name.strip()] = target.strip()
    return scripts


def _arch():
    """dpkg's architecture: the package is Architecture: any (it carries
    the C extension omnirtp.media._fastsrtp)."""
    rc, out, err = _run(["dpkg", "--print-architecture"])
    return out.strip()


def build():
    """Build the package once per run; returns (deb path, build output)."""
    if "deb" not in _built:
        for tool in ("dpkg-buildpackage", "lintian", "dh_python3", "pybuild"):
            if shutil.which(tool, path="/usr/bin:/usr/sbin:/bin") is None:
                raise SkipTest("%s is not installed (make deb-deps installs the "
                               "package build tools)" % tool)
        out = os.path.abspath("omnirtp-deb")
        env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck")
        rc, stdout, stderr = _run([os.path.join(ROOT, "scripts", "build-deb"), out], env=env)
        text = stdout + stderr
        if rc != 0:
            lintian = [ln for ln in text.splitlines() if ln[:3] in ("E: ", "W: ")]
            raise AssertionError("scripts/build-deb failed (%d):\n%s\n--- lintian ---\n%s" % (
                rc, text[-4000:], "\n".join(lintian)))
        [deb] = [os.path.join(out, n) for n in os.listdir(out)
                 if n.startswith("omnirtp_") and n.endswith("_%s.deb" % _arch())]
        _built["deb"], _built["log"] = deb, text
    return _built["deb"], _built["log"]


def extract(test, deb):
    root = os.path.abspath(test.mktemp())
    os.makedirs(root)
    rc, out, err = _run(["dpkg-deb", "-x", deb, root])
    test.assertEqual(rc, 0, err)
    return root


class BuildTests(SynchronousTestCase):

    def setUp(self):
        self.deb, self.log = build()

    def test_lintianClean(self):
        """lintian ran on the .deb and the .changes with --fail-on
        error,warning (build-deb exits non-zero otherwise): no E: or W:."""
        lines = [ln for ln in self.log.splitlines() if ln[:3] in ("E: ", "W: ")]
        self.assertEqual(lines, [])

    def test_contents(self):
        rc, out, err = _run(["dpkg-deb", "-c", self.deb])
        self.assertEqual(rc, 0, err)
        paths = [line.split()[5][1:] for line in out.splitlines()]
        self.assertEqual([p for p in paths if "_trial_temp" in p or "/omnirtp/test" in p
                          or p.endswith("dropin.cache") or p.endswith(".pyc")], [])
        self.assertEqual([p for p in paths if p.startswith("/" + DIST + "/twisted/")],
                         ["/%s/twisted/" % DIST, "/%s/twisted/plugins/" % DIST,
                          "/%s/twisted/plugins/omnirtp_plugin.py" % DIST])
        for path in ("/" + UNIT, "/etc/omnirtp/omnirtp.conf", "/etc/default/omnirtp",
                     "/var/spool/omnirtp/", "/usr/share/doc/omnirtp/README.md",
                     "/%s/omnirtp/cli/ctl.py" % DIST):
            self.assertIn(path, paths)
        # the C extensions (SRTP, bencode, the SDP line pass, the call tree,
        # the parked call's entries, the log lines) are built and packaged
        for ext in ("media/_fastsrtp", "control/_fastbencode", "sdp/_fastsdp",
                    "control/_fasttree", "media/_fastpark", "_fastlog"):
            self.assertEqual(len([p for p in paths if p.startswith("/%s/omnirtp/%s.cpython-"
                                                                    % (DIST, ext))
                                  and p.endswith(".so")]), 1, ext)
        # every console script of setup.cfg is packaged, with a man page
        for name in console_scripts():
            self.assertIn("/usr/bin/" + name, paths)
            self.assertIn("/usr/share/man/man1/%s.1.gz" % name, paths)

    def test_control(self):
        rc, out, err = _run(["dpkg-deb", "-I", self.deb, "conffiles"])
        self.assertEqual(sorted(out.split()), ["/etc/default/omnirtp",
                                               "/etc/omnirtp/omnirtp.conf"])
        rc, out, err = _run(["dpkg-deb", "-f", self.deb, "Depends"])
        depends = {d.strip().split()[0] for d in out.split(",")}
        for dep in ("python3-twisted", "python3-openssl", "python3-pylibsrtp",
                    "python3-aioice", "python3-zope.interface",
                    "python3-prometheus-client", "adduser", "libssl3"):
            self.assertIn(dep, depends)
        rc, out, err = _run(["dpkg-deb", "-I", self.deb])
        for script in ("postinst", "postrm", "prerm", "triggers"):
            self.assertIn(" %s" % script, out)

    def test_unitVerifies(self):
        """systemd-analyze verify on the packaged unit: no complaint."""
        root = extract(self, self.deb)
        unit = os.path.join(root, UNIT)
        rc, out, err = _run(["systemd-analyze", "verify", unit])
        self.assertEqual((rc, err), (0, ""))
        with open(unit) as f:
            text = f.read()
        for line in ("User=omnirtp", "Group=omnirtp", "LimitNOFILE=1048576",
                     "NoNewPrivileges=true", "ProtectSystem=strict", "KillMode=mixed",
                     "ExecReload=/bin/kill -HUP $MAINPID"):
            self.assertIn("\n" + line + "\n", text)

    def test_unpackedEntryPoints(self):
        """Unpacked (dpkg -x), under Debian's python3 and twistd3: the
        packaged config passes --config-test, and every console script runs."""
        root = extract(self, self.deb)
        env = dict(os.environ, PYTHONPATH=os.path.join(root, DIST))
        env.pop("VIRTUAL_ENV", None)
        conf = os.path.join(root, "etc/omnirtp/omnirtp.conf")
        rc, out, err = _run(["/usr/bin/twistd3", "omnirtp", "--config-test",
                             "--config-file", conf], env=env, cwd=root)
        self.assertEqual((rc, out.strip()), (0, "omnirtp: configuration OK (%s)" % conf), err)
        for name in console_scripts():
            script = os.path.join(root, "usr/bin", name)
            with open(script) as f:
                self.assertEqual(f.readline().strip(), "#!" + DEBIAN_PYTHON)
            rc, out, err = _run([script, "--help"], env=env, cwd=root)
            self.assertEqual(rc, 0, err)
            self.assertNotIn("Traceback", out + err)


class _AptLock:
    """Held while dpkg runs: scripts/apt-ensure of a parallel `make`
    (flock on the same file) waits instead of failing on dpkg's lock."""

    def __enter__(self):
        self.f = open(APT_LOCK, "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def _installed(package):
    rc, out, _ = _run(["dpkg-query", "-W", "-f=${Status}", package])
    return rc == 0 and "installed" in out and "not-installed" not in out


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _processes_of(uid):
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat("/proc/" + name).st_uid == uid:
                    pids.append(int(name))
            except FileNotFoundError:
                pass
    return pids


def unit_settings(path):
    """The [Service] keys of a unit file (last one wins; no line
    continuations in ours)."""
    settings = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, value = line.split("=", 1)
                settings[key] = value
    return settings


def expand(command, environment):
    """systemd's ExecStart expansion for ``$NAME`` (split into words) and
    ``${NAME}`` (one word), enough for our unit."""
    words = []
    for word in shlex.split(command):
        if word.startswith("${") and word.endswith("}"):
            words.append(environment.get(word[2:-1], ""))
        elif word.startswith("$"):
            words.extend(environment.get(word[1:], "").split())
        else:
            words.append(word)
    return words


def environment_file(path):
    env = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = line.split("=", 1)
                    env[key.strip()] = value.strip().strip('"')
    return env


class InstalledTests(SynchronousTestCase):
    """``dpkg -i`` on this machine, then the service as systemd would run it.

    Guards, so that the machine is left as it was: root only; refused when
    an ``omnirtp`` package or an ``omnirtp`` user is already there (then
    the test cannot tell its own changes from the operator's); concurrent
    runs take turns (a lock file); dpkg runs
    under the lock scripts/apt-ensure uses; cleanup purges the package,
    removes the user and group postinst made and kills any process left
    (which the test then reports as a failure)."""

    def setUp(self):
        if os.geteuid() != 0:
            raise SkipTest("installing the .deb needs root (CI runs make test as root)")
        # one install at a time on this machine (two test runs side by side
        # wait for each other instead of seeing each other's package)
        lock = open(INSTALL_LOCK, "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
        self.addCleanup(lock.close)
        if _installed("omnirtp"):
            raise SkipTest("an omnirtp package is installed on this machine already; "
                           "the test installs and purges its own build")
        if _user_exists("omnirtp"):
            raise SkipTest("a user omnirtp exists on this machine already")
        self.deb, _ = build()
        self.addCleanup(self.uninstall)
        with _AptLock():
            rc, out, err = _run(["dpkg", "-i", self.deb], env=CLEAN_ENV)
        self.assertEqual(rc, 0, out + err)

    def uninstall(self):
        if _user_exists("omnirtp"):
            for pid in _processes_of(pwd.getpwnam("omnirtp").pw_uid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        with _AptLock():
            _run(["dpkg", "--purge", "omnirtp"], env=CLEAN_ENV)
        if _user_exists("omnirtp"):
            _run(["userdel", "omnirtp"])
        _run(["groupdel", "omnirtp"])
        shutil.rmtree("/run/omnirtp", ignore_errors=True)
        shutil.rmtree("/var/spool/omnirtp", ignore_errors=True)

    def as_user(self, argv):
        return ["setpriv", "--reuid=omnirtp", "--regid=omnirtp", "--init-groups"] + argv

    def test_installedAndRunning(self):
        user = pwd.getpwnam("omnirtp")
        self.assertEqual((user.pw_dir, user.pw_shell), ("/var/spool/omnirtp", "/usr/sbin/nologin"))
        self.assertLess(user.pw_uid, 1000)  # a system user
        st = os.stat("/etc/omnirtp/omnirtp.conf")
        self.assertEqual((oct(st.st_mode & 0o777), st.st_uid), ("0o640", 0))
        self.assertEqual(os.stat("/var/spool/omnirtp").st_uid, user.pw_uid)

        # --config-test as the service's user, on the installed config
        rc, out, err = _run(self.as_user(["/usr/bin/twistd3", "omnirtp", "--config-test",
                                          "--config-file", "/etc/omnirtp/omnirtp.conf"]),
                            cwd="/var/spool/omnirtp", env=self.clean_env())
        self.assertEqual((rc, out.strip()),
                         (0, "omnirtp: configuration OK (/etc/omnirtp/omnirtp.conf)"), err)

        # the unit's ExecStart as its User, with free ports through the
        # EnvironmentFile (as an operator's OMNIRTP_OPTS would)
        ng = free_port(socket.SOCK_DGRAM, LOOPBACK)
        cli = free_port(socket.SOCK_STREAM, LOOPBACK)
        low, high = free_port_range(20)
        with open("/etc/default/omnirtp", "w") as f:
            f.write('OMNIRTP_OPTS="--listen-ng=%s:%d --listen-cli=%s:%d --listen-http=%s:%d '
                    '--port-min=%d --port-max=%d --num-threads=1"\n'
                    % (LOOPBACK, ng, LOOPBACK, cli, LOOPBACK, cli, low, high))
        unit = unit_settings("/" + UNIT)
        env = environment_file(unit["EnvironmentFile"].lstrip("-"))
        argv = expand(unit["ExecStart"], env)
        self.assertEqual(argv[:5], ["/usr/bin/twistd3", "-n", "--pidfile=", "omnirtp",
                                    "--config-file"])
        os.makedirs("/run/omnirtp", exist_ok=True)  # RuntimeDirectory=
        shutil.chown("/run/omnirtp", "omnirtp", "omnirtp")
        log_path = os.path.abspath(self.mktemp())
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["setpriv", "--reuid=" + unit["User"], "--regid=" + unit["Group"],
                 "--init-groups", "--no-new-privs"] + argv,
                cwd=unit["WorkingDirectory"], env=self.clean_env(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())

        def log_text():
            with open(log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]

        client = NGClient(ng, timeout=0.3, tries=1)
        self.addCleanup(client.close)
        deadline = time.monotonic() + 30
        while not client.ping():
            self.assertIsNone(proc.poll(), log_text())
            self.assertLess(time.monotonic(), deadline, log_text())
        # every process of the service runs as omnirtp: the control process
        # and its media worker
        self.assertGreaterEqual(len(_processes_of(user.pw_uid)), 2, log_text())

        rc, out, err = _run(["/usr/bin/omnirtp-ctl", "-ip", LOOPBACK, "-port", str(cli),
                             "list", "totals"], env=self.clean_env())
        self.assertEqual(rc, 0, err)
        self.assertIn("Statistics over currently running sessions:", out)
        self.assertIn("Total managed sessions", out)

        # ExecReload: SIGHUP re-reads the config; the daemon stays
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "SIGHUP: configuration reloaded" not in log_text():
            self.assertLess(time.monotonic(), deadline, log_text())
            time.sleep(0.1)
        client.timeout, client.tries = 2.0, 2
        self.assertTrue(client.ping())

        # systemctl stop: SIGTERM to the main process (KillMode=mixed), a
        # clean exit, nothing of the user left behind.  twistd ends by
        # re-raising the SIGTERM it handled, which systemd counts as a clean
        # exit (SuccessExitStatus: 0, SIGHUP, SIGINT, SIGTERM, SIGPIPE)
        proc.send_signal(signal.SIGTERM)
        self.assertIn(proc.wait(30), (0, -signal.SIGTERM), log_text())
        self.assertIn("Server Shut Down.", log_text())
        self.assertNotIn("Traceback", log_text())
        # the plugin caches were written at install time (python3-twisted's
        # trigger for twisted/plugins, postinst for omnirtp/plugins)
        self.assertNotIn("Unable to write to plugin cache", log_text())
        self.assertTrue(os.path.exists("/" + DIST + "/omnirtp/plugins/dropin.cache"))
        deadline = time.monotonic() + 10
        while _processes_of(user.pw_uid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(_processes_of(user.pw_uid), [], log_text())

    def clean_env(self):
        return dict(CLEAN_ENV)

    def test_purge(self):
        with _AptLock():
            rc, out, err = _run(["dpkg", "--purge", "omnirtp"], env=CLEAN_ENV)
        self.assertEqual(rc, 0, out + err)
        for path in ("/etc/omnirtp/omnirtp.conf", "/etc/default/omnirtp",
                     "/" + DIST + "/omnirtp/plugins/dropin.cache",
                     "/usr/bin/omnirtp-ctl", "/" + UNIT,
                     "/usr/lib/python3/dist-packages/omnirtp",
                     "/usr/lib/python3/dist-packages/twisted/plugins/omnirtp_plugin.py"):
            self.assertFalse(os.path.exists(path), path)
        # python3-twisted's own plugin files are untouched
        self.assertTrue(os.path.exists("/usr/lib/python3/dist-packages/twisted/plugins/__init__.py"))
