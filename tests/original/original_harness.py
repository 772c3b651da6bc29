"""Runs pieces of the ORIGINAL 2017 Dandelion (peter850421/Dandelion @ 01c92ae)
for tests/original/run.sh, under Python 3.6 with the original's pinned
dependencies.

Subcommands:

  run-box SRC         run SRC/run_box.py as __main__ (reads SRC/config.yaml)
  run-publisher SRC   run SRC/run_publisher.py as __main__
  push SRC PUBLISHER_ID REDIS_PORT DB PATH TTL
                      FileManager(...).push(PATH, TTL), the original user "API"
  ask SRC PUBLISHER_ID REDIS_PORT DB PATH
                      FileManager(...).ask(PATH), printed as one line of JSON
  free-ports N        print N free TCP ports on 127.0.0.1, one a line
  search-answer LOG   from an original publisher's dandelion.log, the first
                      SEARCH answer it received: its boxes and, for each, the
                      values that are not strings (what the original's Redis
                      HMSET cannot store)

The original entry points run unmodified. Before they start, and before the
original package is imported, this module applies the only changes needed to
run them on one machine with no outside network (each says why below):

  1. A guard that refuses, and logs with the marker ORIGINAL-NET-GUARD, any
     connection the original tries to an address that is not loopback (plain
     sockets, as redis-py uses, and every aiohttp client request, as uvloop
     connects below the socket module). run.sh fails if the marker appears.
  2. dandelion.utils.get_ip / dandelion.httpclient.get_ip, which ask three
     public what-is-my-IP services over the internet, return "127.0.0.1".
  3. The box server's nginx access log (hard-coded /var/log/nginx/nginx-access.log,
     which the box also DELETES when it stops or past 1 MiB) is taken from
     $ORIGINAL_NGINX_ACCESS_LOG, the data server's log in run.sh's temp dir.
  4. aiohttp.web.run_app binds 127.0.0.1 instead of the hard-coded 0.0.0.0.
"""

import asyncio
import ipaddress
import json
import os
import runpy
import socket
import sys

GUARD = "ORIGINAL-NET-GUARD"


def _is_local(host):
    if host is None:
        return False
    host = str(host).strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: the original would have to resolve it


def _blocked(what):
    sys.stderr.write("%s: blocked a connection to %s (not loopback)\n" % (GUARD, what))
    sys.stderr.flush()
    # Also into the original's own log file, which run.sh greps.
    try:
        with open("dandelion.log", "a") as f:
            f.write("%s: blocked a connection to %s (not loopback)\n" % (GUARD, what))
    except OSError:
        pass


def install_network_guard():
    """Patch 1: refuse and log every non-loopback connection attempt."""
    orig_connect = socket.socket.connect
    orig_connect_ex = socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            if not _is_local(address[0]):
                _blocked(repr(address))
                raise OSError(101, "Network is unreachable (%s)" % GUARD)

    def connect(self, address):
        check(self, address)
        return orig_connect(self, address)

    def connect_ex(self, address):
        check(self, address)
        return orig_connect_ex(self, address)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex

    import aiohttp
    import yarl

    orig_request = aiohttp.ClientSession._request

    @asyncio.coroutine
    def _request(self, method, url, **kwargs):
        host = yarl.URL(url).host if not isinstance(url, yarl.URL) else url.host
        if not _is_local(host):
            _blocked("%s %s" % (method, url))
            raise aiohttp.ClientOSError(101, "Network is unreachable (%s)" % GUARD)
        return (yield from orig_request(self, method, url, **kwargs))

    aiohttp.ClientSession._request = _request

    # Patch 4: the original binds "0.0.0.0" whatever its config says.
    import aiohttp.web

    orig_run_app = aiohttp.web.run_app

    def run_app(app, **kwargs):
        kwargs["host"] = "127.0.0.1"
        return orig_run_app(app, **kwargs)

    aiohttp.web.run_app = run_app


def patch_original():
    """Patches 2 and 3, on the original package (imported from sys.path)."""
    import dandelion.utils
    import dandelion.httpclient
    import dandelion.httpserver

    @asyncio.coroutine
    def get_ip():
        return "127.0.0.1"

    # httpclient did `from .utils import get_ip`: both names must be replaced.
    dandelion.utils.get_ip = get_ip
    dandelion.httpclient.get_ip = get_ip

    access_log = os.environ.get("ORIGINAL_NGINX_ACCESS_LOG")
    if access_log:
        cls = dandelion.httpserver.BoxAsyncServer
        orig_init = cls.__init__

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("nginx_access_log", access_log)
            orig_init(self, *args, **kwargs)

        cls.__init__ = __init__


def run_entry_point(src, script):
    sys.path.insert(0, src)
    install_network_guard()
    patch_original()
    # The box forks its client process (multiprocessing, fork): the patches
    # above are inherited by it.
    runpy.run_path(os.path.join(src, script), run_name="__main__")


def file_manager(src, publisher_id, redis_port, db):
    sys.path.insert(0, src)
    install_network_guard()
    from dandelion.httpclient import FileManager

    return FileManager(publisher_id, redis_address=("127.0.0.1", int(redis_port)), redis_db=int(db))


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        for s in socks:
            print(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()


def search_answer(log):
    """The first SEARCH answer in a publisher's debug log, summarised."""
    import ast
    import re

    pattern = re.compile(r"RECEIVE MSG WSMessage\(type=[^,]*, data=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
    with open(log, errors="replace") as f:
        for line in f:
            m = pattern.search(line)
            if not m:
                continue
            try:
                msg = json.loads(ast.literal_eval(m.group(1)))
            except ValueError:
                continue
            if msg.get("COMMAND") != "SEARCH":
                continue
            boxes = msg.get("BOX_SET")
            if not isinstance(boxes, dict):
                print("SEARCH answer: BOX_SET is %s, not an object" % type(boxes).__name__)
                return
            print("SEARCH answer: %d box(es) in BOX_SET" % len(boxes))
            names = {dict: "object", list: "array", bool: "boolean", int: "number",
                     float: "number", type(None): "null"}
            for box_id, exchange in sorted(boxes.items()):
                if not isinstance(exchange, dict):
                    print("  %s: the entry is %s" % (box_id, names.get(type(exchange), "?")))
                    continue
                odd = ["%s (%s: %s)" % (k, names.get(type(v), "?"), json.dumps(v)[:80])
                       for k, v in sorted(exchange.items()) if not isinstance(v, str)]
                print("  %s: %s" % (box_id, "non-string values: " + ", ".join(odd) if odd
                                    else "all values are strings"))
            return
    print("no SEARCH answer in %s" % log)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "run-box":
        run_entry_point(args[0], "run_box.py")
    elif cmd == "run-publisher":
        run_entry_point(args[0], "run_publisher.py")
    elif cmd == "push":
        src, pid, port, db, path, ttl = args
        file_manager(src, pid, port, db).push(path, int(ttl))
    elif cmd == "ask":
        src, pid, port, db, path = args
        print(json.dumps(file_manager(src, pid, port, db).ask(path), sort_keys=True))
    elif cmd == "free-ports":
        free_ports(int(args[0]))
    elif cmd == "search-answer":
        search_answer(args[0])
    else:
        sys.exit("unknown subcommand %r\n%s" % (cmd, __doc__))


if __name__ == "__main__":
    main(sys.argv)
