"""docker/: the seed deployment's "Uso con Docker", served by omnirtp.

This machine has the docker client but no daemon, so the image is built
only where one answers (``test_dockerBuild``; otherwise an allowed skip).
Everything else runs here:

* ``docker-compose config`` (Debian's docker-compose 1.29, which needs no
  daemon) validates docker/compose.yaml and interpolates it with the seed's
  addresses (docker/.env.example, the seed's ``.env`` values); the
  resolved service is checked: host network, the addresses in the
  environment, the seed's rtpengine.conf (byte for byte the seed's) mounted
  read-only where rtpengine reads it, the seed's command line;
* that command line, given to ``docker/rtpengine`` (the image's
  ``rtpengine``) with the image's config file, passes ``--config-test``;
  then, with loopback addresses and free ports in place of the seed's, it
  really starts, answers ng ping and ``rtpengine-ctl`` (the image's
  symlink to omnirtp-ctl) ``list`` and ``query``;
* the Dockerfile: Debian 12 base, the build stage installs debian/control's
  Build-Depends, the image runs as the package's user with the seed's CMD.
"""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from omnirtp.test.integration.peers import (
    LOOPBACK, ROOT, NGClient, TWISTD, free_port, free_port_range)

DOCKER = os.path.join(ROOT, "docker")
SEED = os.path.join(ROOT, "omnirtp", "test", "fixtures", "config", "seed")
CONF = os.path.join(DOCKER, "configs", "rtpengine", "rtpengine.conf")

#: the seed's compose command (its "Uso con Docker" section), then ours
SEED_WORDS = [
    "rtpengine", "--interface=PRIVATE_IP/172.20.0.10",
    "--interface=PUBLIC_IP/203.0.113.1!203.0.113.1", "--listen-ng=0.0.0.0:22222",
    "--port-min=30000", "--port-max=40000", "--log-level=6", "--foreground"]
OUR_WORDS = ["--listen-cli=127.0.0.1:9900", "--listen-http=127.0.0.1:9900",
             "--control-allow=172.20.0.0/16"]


def compose_config(test, env_file):
    """``docker-compose config`` of docker/compose.yaml as a dict."""
    binary = shutil.which("docker-compose")
    if binary is None:
        raise SkipTest("docker-compose is not installed (Debian package docker-compose)")
    done = subprocess.run([binary, "--env-file", env_file, "-f",
                           os.path.join(DOCKER, "compose.yaml"), "config"],
                          cwd=DOCKER, capture_output=True, timeout=120,
                          env=dict(os.environ, COMPOSE_INTERACTIVE_NO_CLI="1"))
    test.assertEqual(done.returncode, 0, done.stderr.decode())
    # PyYAML comes with Debian's docker-compose (python3-yaml)
    parsed = subprocess.run(
        ["/usr/bin/python3", "-c",
         "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=done.stdout, capture_output=True, timeout=60)
    test.assertEqual(parsed.returncode, 0, parsed.stderr.decode())
    return json.loads(parsed.stdout)


def dockerfile_stages(path):
    """[(FROM line, [(INSTRUCTION, argument)])] with continuations joined."""
    stages = []
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append((rest, []))
        else:
            stages[-1][1].append((word, " ".join(rest.split())))
    return stages


class ComposeTests(SynchronousTestCase):

    def test_seedConfigUnchanged(self):
        """docker/ carries the seed's rtpengine.conf byte for byte."""
        with open(CONF, "rb") as a, open(os.path.join(SEED, "rtpengine.conf"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_envExampleIsTheSeeds(self):
        with open(os.path.join(SEED, ".env")) as f:
            seed = dict(line.split("=", 1) for line in f.read().split())
        with open(os.path.join(DOCKER, ".env.example")) as f:
            ours = dict(line.split("=", 1) for line in f.read().split("\n")
                        if line and not line.startswith("#"))
        self.assertEqual({k: ours[k] for k in seed}, seed)

    def test_composeConfig(self):
        config = compose_config(self, os.path.join(DOCKER, ".env.example"))
        service = config["services"]["rtpengine"]
        self.assertEqual(service["network_mode"], "host")
        self.assertEqual(service["container_name"], "rtpengine")
        self.assertEqual(service["environment"],
                         {"PRIVATE_IP": "172.20.0.10", "PUBLIC_IP": "203.0.113.1"})
        self.assertEqual(service["volumes"],
                         ["%s:/etc/rtpengine/rtpengine.conf:ro" % CONF])
        self.assertEqual(service["ulimits"], {"nofile": 150000})
        self.assertEqual(service["build"], {"context": ROOT,
                                            "dockerfile": "docker/Dockerfile"})
        self.assertEqual(shlex.split(service["command"]), SEED_WORDS + OUR_WORDS)
        self.assertNotIn("privileged", service)

    def test_seedCommandLine(self):
        """The resolved command, run as the image runs it (docker/rtpengine
        with the mounted config), passes --config-test."""
        config = compose_config(self, os.path.join(DOCKER, ".env.example"))
        words = shlex.split(config["services"]["rtpengine"]["command"])
        env = dict(os.environ, PYTHONPATH=ROOT, PRIVATE_IP="172.20.0.10",
                   PUBLIC_IP="203.0.113.1")
        argv = self.wrapper_argv(words, ["--config-file=" + CONF, "--config-test"])
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        self.assertEqual(done.stdout.decode().splitlines()[-1],
                         "omnirtp: configuration OK (%s)" % CONF)

    def wrapper_argv(self, words, extra):
        """docker/rtpengine's exec line, with this checkout's python and
        twistd in place of the image's /usr/bin/twistd3."""
        with open(os.path.join(DOCKER, "rtpengine")) as f:
            script = f.read()
        self.assertIn('exec /usr/bin/twistd3 -n --pidfile= omnirtp "$@"\n', script)
        self.assertTrue(os.access(os.path.join(DOCKER, "rtpengine"), os.X_OK))
        self.assertEqual(words[0], "rtpengine")
        return [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "omnirtp"] + \
            extra + words[1:]

    def test_seedDeploymentRuns(self):
        """The same command line with loopback in .env and free ports in
        place of 22222, 30000-40000 and 9900: ng ping, rtpengine-ctl."""
        ng = free_port(socket.SOCK_DGRAM, LOOPBACK)
        cli = free_port(socket.SOCK_STREAM, LOOPBACK)
        low, high = free_port_range(40)
        env_file = self.mktemp()
        with open(env_file, "w") as f:
            f.write("PRIVATE_IP=127.0.0.1\nPUBLIC_IP=127.0.0.1\n")
        config = compose_config(self, os.path.abspath(env_file))
        service = config["services"]["rtpengine"]
        words = [w.replace("0.0.0.0:22222", "127.0.0.1:%d" % ng)
                  .replace("=30000", "=%d" % low).replace("=40000", "=%d" % high)
                  .replace(":9900", ":%d" % cli)
                 for w in shlex.split(service["command"])]
        env = dict(os.environ, PYTHONPATH=ROOT, **service["environment"])
        log_path = os.path.abspath(self.mktemp())
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(self.wrapper_argv(words, ["--config-file=" + CONF]),
                                    cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)

        def stop():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.addCleanup(stop)

        def log_text():
            with open(log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")

        client = NGClient(ng, timeout=0.3, tries=1)
        self.addCleanup(client.close)
        deadline = time.monotonic() + 60
        while not client.ping():
            self.assertIsNone(proc.poll(), log_text()[-4000:])
            self.assertLess(time.monotonic(), deadline, log_text()[-4000:])
        # the seed's num-threads (the summary line near the top of the log)
        self.assertIn("; 4 media worker processes;", log_text())
        ctl = [sys.executable, "-m", "omnirtp.cli.ctl", "-ip", LOOPBACK, "-port", str(cli)]
        done = subprocess.run(ctl + ["list"], capture_output=True, timeout=30,
                              env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertEqual((done.returncode, done.stdout.decode()),
                         (0, "No sessions on this media relay.\n"), done.stderr.decode())
        done = subprocess.run(ctl + ["query"], capture_output=True, timeout=30,
                              env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertEqual(done.returncode, 0, done.stderr.decode())
        self.assertIn("Total managed sessions", done.stdout.decode())
        stop()
        self.assertIn(proc.returncode, (0, -15), log_text()[-4000:])


class DockerfileTests(SynchronousTestCase):

    def setUp(self):
        self.stages = dockerfile_stages(os.path.join(DOCKER, "Dockerfile"))

    def test_stages(self):
        self.assertEqual([s[0] for s in self.stages],
                         ["debian:bookworm-slim AS build", "debian:bookworm-slim"])

    def test_buildStageHasBuildDepends(self):
        """The build stage installs every package of debian/control's
        Build-Depends (apart from the test-only ones)."""
        with open(os.path.join(ROOT, "debian", "control")) as f:
            control = f.read()
        block = re.search(r"^Build-Depends:(.*?)^\S", control, re.M | re.S).group(1)
        wanted = set()
        for item in block.split(","):
            item = item.strip()
            if item and "<!nocheck>" not in item and not item.startswith("debhelper-compat"):
                wanted.add(item.split()[0])
        runs = " ".join(arg for word, arg in self.stages[0][1] if word == "RUN")
        installed = set(runs.split())
        self.assertEqual(sorted(wanted - installed), [])
        self.assertIn("debhelper", installed)
        self.assertIn("DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -us -uc -b", runs)

    def test_runtimeStage(self):
        steps = self.stages[1][1]
        self.assertIn(("USER", "omnirtp"), steps)
        self.assertIn(("CMD", '["rtpengine", "--config-file=/etc/rtpengine/rtpengine.conf", '
                              '"--foreground"]'), steps)
        self.assertIn(("EXPOSE", "22222/udp 30000-40000/udp 9900/tcp"), steps)
        self.assertIn(("COPY", "docker/rtpengine /usr/local/bin/rtpengine"), steps)
        self.assertIn(("COPY", "docker/configs/rtpengine/rtpengine.conf "
                               "/etc/rtpengine/rtpengine.conf"), steps)
        run = " ".join(arg for word, arg in steps if word == "RUN")
        self.assertIn("apt-get install -y --no-install-recommends /tmp/omnirtp_*.deb", run)
        self.assertIn("ln -s /usr/bin/omnirtp-ctl /usr/local/bin/rtpengine-ctl", run)
        for word, arg in steps:
            if word == "COPY" and not arg.startswith("--from"):
                self.assertTrue(os.path.exists(os.path.join(ROOT, arg.split()[0])), arg)

    def test_dockerignore(self):
        with open(os.path.join(ROOT, ".dockerignore")) as f:
            ignored = f.read().split()
        for name in (".venv", "_trial_temp*", ".git", "docker/.env"):
            self.assertIn(name, ignored)

    def test_dockerBuild(self):
        """docker build, where a Docker daemon answers."""
        docker = shutil.which("docker")
        if docker is None or subprocess.run([docker, "info"], capture_output=True,
                                            timeout=60).returncode != 0:
            raise SkipTest("no Docker daemon here: the image is checked by the "
                           "compose and Dockerfile tests only")
        done = subprocess.run([docker, "build", "-f", "docker/Dockerfile", "-t",
                               "omnirtp-test:latest", "."], cwd=ROOT, capture_output=True,
                              timeout=1800)
        self.assertEqual(done.returncode, 0, done.stderr.decode()[-4000:])
        done = subprocess.run([docker, "run", "--rm", "-e", "PRIVATE_IP=127.0.0.1",
                               "-e", "PUBLIC_IP=127.0.0.1", "omnirtp-test:latest",
                               "rtpengine", "--config-file=/etc/rtpengine/rtpengine.conf",
                               "--config-test"], capture_output=True, timeout=300)
        self.assertEqual(done.stdout.decode().splitlines()[-1],
                         "omnirtp: configuration OK (/etc/rtpengine/rtpengine.conf)")
