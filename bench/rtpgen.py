"""Build and drive bench/rtpgen.c, the C RTP load generator.

``build()`` compiles it with ``gcc -O2 -Wall -Wextra`` into ``build/rtpgen``
(or another directory) when the binary is missing or older than the source.
``Generator`` runs it and speaks its stdin protocol (see the comment at the
top of rtpgen.c): ``open`` answers the party's local port, ``send``/``stop``/
``close`` answer nothing unless they fail, ``stats`` and ``quit`` answer JSON.
Error lines that arrive while waiting for an answer are kept in ``errors``.
"""

import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "rtpgen.c")
BUILD = os.path.join(os.path.dirname(HERE), "build")


def build(directory=BUILD):
    """The path of a current rtpgen binary in ``directory``, compiled if needed."""
    binary = os.path.join(directory, "rtpgen")
    if (os.path.exists(binary)
            and os.path.getmtime(binary) >= os.path.getmtime(SOURCE)):
        return binary
    os.makedirs(directory, exist_ok=True)
    # under a temporary name first: another run may be using the old binary
    partial = "%s.%d" % (binary, os.getpid())
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", partial, SOURCE],
                   check=True)
    os.replace(partial, binary)
    return binary


class Generator:
    def __init__(self, binary, host="127.0.0.1"):
        self.proc = subprocess.Popen([binary, host], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.pid = self.proc.pid
        self.errors = []

    def _write(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _answer(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("rtpgen exited (%s)" % self.proc.poll())
            if line.startswith("error "):
                self.errors.append(line[6:].strip())
                continue
            return line

    def open(self, party, peer=None):
        """Create party's socket; its local port.  With ``peer``, only that
        party's packets count as received."""
        self._write("open %d" % party if peer is None else "open %d %d" % (party, peer))
        line = self._answer()
        word, number, port = line.split()
        if word != "port" or int(number) != party:
            raise RuntimeError("rtpgen answered %r to open %d" % (line, party))
        return int(port)

    def send(self, party, port):
        self._write("send %d %d" % (party, port))

    def stop(self, party):
        self._write("stop %d" % party)

    def close(self, party):
        self._write("close %d" % party)

    def stats(self):
        self._write("stats")
        return json.loads(self._answer())

    def quit(self, timeout=30):
        """The final report: totals and ``parties`` as a dict of
        id -> (sent, send_errors, missed, received, foreign, drops)."""
        self._write("quit")
        result = json.loads(self._answer())
        self.proc.wait(timeout)
        self.proc.stdin.close()
        self.proc.stdout.close()
        result["parties"] = {row[0]: tuple(row[1:]) for row in result["parties"]}
        return result

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
